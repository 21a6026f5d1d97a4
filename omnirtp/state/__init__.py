"""Call state stores (memory, Redis) and the Redis wire protocol."""
