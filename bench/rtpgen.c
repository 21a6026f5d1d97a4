/*
 * rtpgen: an RTP load generator for bench/soak.py.
 *
 * Plays many call parties at once from one process.  Every party has its own
 * UDP socket on HOST (given as argv[1], default 127.0.0.1), sends 172-byte RTP
 * packets (12-byte header, 160 bytes of PCMU silence) every 20 ms to the port
 * it was told, with its own SSRC, sequence number and timestamp, and counts
 * what comes back on its socket.
 *
 * Pacing: a 1 ms timerfd divides the 20 ms packet time into 20 slots; party
 * ID sends in slot ID % 20, so the packets of all parties are spread evenly
 * over the 20 ms instead of leaving in one burst.  When the process falls
 * behind it catches up at most one packet time (20 slots); sends older than
 * that are skipped and counted per party as "missed".
 *
 * Commands, one per line on stdin (IDs are small non-negative integers that
 * the caller picks and never reuses):
 *
 *   open ID [PEER]   create the party's socket; answers "port ID PORT" on stdout.
 *                    With PEER (the ID of the other party of the call) only
 *                    packets with PEER's SSRC count as received
 *   send ID PORT     start (or keep) sending to HOST:PORT
 *   stop ID          stop sending; the socket keeps receiving and counting
 *   close ID         close the socket; its counts are kept for the report
 *   stats            answers one JSON line of running totals
 *   quit (or EOF)    answers one JSON object with the totals and every
 *                    party's counts, then exits
 *
 * Errors in a command are answered "error TEXT" on stdout.
 *
 * Counted per party: sent (packets the kernel accepted), send_errors (sends
 * it refused, e.g. EAGAIN or ENOBUFS), missed (sends skipped because the
 * process was more than 20 ms late), received (RTP packets with the peer's
 * SSRC, or any of this generator's SSRCs when no peer was named), foreign
 * (any other datagram), drops (datagrams the
 * kernel dropped at this socket: SO_MEMINFO's SK_MEMINFO_DROPS, read when the
 * socket closes or for "stats").
 *
 * Build: gcc -O2 -Wall -Wextra -o rtpgen rtpgen.c   (Linux only)
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 20                 /* 1 ms slots per 20 ms packet time */
#define SLOT_NS 1000000LL
#define PACKET_SIZE 172
#define RTP_HEADER 12
#define SAMPLES_PER_PACKET 160   /* 8 kHz * 20 ms */
#define SSRC_TAG 0x5a000000u     /* high byte of every SSRC we send */
#define BATCH 16                 /* datagrams per recvmmsg */
#define MAX_EVENTS 256

/* epoll user data for the two non-party descriptors (party IDs are below) */
#define EV_STDIN ((uint64_t)-1)
#define EV_TIMER ((uint64_t)-2)

struct party {
	int fd;                  /* -1 once closed */
	int sending;
	struct sockaddr_in dest;
	uint16_t seq;
	uint32_t timestamp;
	uint32_t ssrc;
	uint32_t peer_ssrc;      /* 0: any SSRC of ours counts as received */
	uint64_t sent, send_errors, missed, received, foreign, drops;
};

static const char *host = "127.0.0.1";
static struct party **parties;   /* indexed by ID; NULL: never opened */
static size_t nparties;          /* size of the parties array */
static int epfd;
static uint64_t late_slots;      /* slots sent late (caught up) */
static uint64_t skipped_slots;   /* slots skipped (over 20 ms late) */
static long long max_lag_ns;

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Answer on stdout, flushed: the caller waits for it. */
static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void reply(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
}

/* The party with this ID, or NULL (with an error answered) if there is none
 * or it is closed. */
static struct party *find(long id)
{
	if (id < 0 || (size_t)id >= nparties || !parties[id] || parties[id]->fd < 0) {
		reply("error no open party %ld\n", id);
		return NULL;
	}
	return parties[id];
}

/* Datagrams the kernel dropped at this socket so far. */
static uint64_t socket_drops(int fd)
{
	uint32_t mem[SK_MEMINFO_VARS];
	socklen_t len = sizeof(mem);

	if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) < 0 ||
	    len < (SK_MEMINFO_DROPS + 1) * sizeof(uint32_t))
		return 0;
	return mem[SK_MEMINFO_DROPS];
}

static void cmd_open(long id, long peer)
{
	struct sockaddr_in addr;
	socklen_t len = sizeof(addr);
	struct epoll_event ev;
	struct party *p;
	int fd;

	if (id < 0 || id > 10000000) {
		reply("error bad id %ld\n", id);
		return;
	}
	if ((size_t)id < nparties && parties[id]) {
		reply("error party %ld was opened before\n", id);
		return;
	}
	if ((size_t)id >= nparties) {
		size_t n = nparties ? nparties : 1024;
		struct party **grown;

		while (n <= (size_t)id)
			n *= 2;
		grown = realloc(parties, n * sizeof(*parties));
		if (!grown) {
			reply("error out of memory\n");
			return;
		}
		memset(grown + nparties, 0, (n - nparties) * sizeof(*parties));
		parties = grown;
		nparties = n;
	}
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		reply("error socket: %s\n", strerror(errno));
		return;
	}
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	inet_pton(AF_INET, host, &addr.sin_addr);
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&addr, &len) < 0) {
		reply("error bind: %s\n", strerror(errno));
		close(fd);
		return;
	}
	ev.events = EPOLLIN;
	ev.data.u64 = (uint64_t)id;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		reply("error epoll: %s\n", strerror(errno));
		close(fd);
		return;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		reply("error out of memory\n");
		close(fd);
		return;
	}
	p->fd = fd;
	p->ssrc = SSRC_TAG | ((uint32_t)id & 0xffffff);
	if (peer >= 0)
		p->peer_ssrc = SSRC_TAG | ((uint32_t)peer & 0xffffff);
	p->seq = (uint16_t)(id * 7919);            /* any start will do */
	p->timestamp = (uint32_t)id * 104729u;
	parties[id] = p;
	reply("port %ld %u\n", id, ntohs(addr.sin_port));
}

static void cmd_send(long id, long port)
{
	struct party *p = find(id);

	if (!p)
		return;
	if (port <= 0 || port > 65535) {
		reply("error bad port %ld\n", port);
		return;
	}
	memset(&p->dest, 0, sizeof(p->dest));
	p->dest.sin_family = AF_INET;
	p->dest.sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, host, &p->dest.sin_addr);
	p->sending = 1;
}

static void receive(struct party *p);

static void cmd_close(struct party *p)
{
	/* count what is queued (it arrived before the close), then the drops */
	receive(p);
	p->drops = socket_drops(p->fd);
	epoll_ctl(epfd, EPOLL_CTL_DEL, p->fd, NULL);
	close(p->fd);
	p->fd = -1;
	p->sending = 0;
}

/* Sums over all parties ever opened (drops of open sockets read now). */
struct totals {
	uint64_t sent, send_errors, missed, received, foreign, drops;
	long open, sending;
};

static void sum(struct totals *t)
{
	size_t i;

	memset(t, 0, sizeof(*t));
	for (i = 0; i < nparties; i++) {
		struct party *p = parties[i];

		if (!p)
			continue;
		t->sent += p->sent;
		t->send_errors += p->send_errors;
		t->missed += p->missed;
		t->received += p->received;
		t->foreign += p->foreign;
		if (p->fd >= 0) {
			t->drops += socket_drops(p->fd);
			t->open++;
			t->sending += p->sending;
		} else {
			t->drops += p->drops;
		}
	}
}

static void print_totals(void)
{
	struct totals t;
	struct rusage ru;

	sum(&t);
	getrusage(RUSAGE_SELF, &ru);
	printf("{\"sent\": %llu, \"send_errors\": %llu, \"missed\": %llu, "
	       "\"received\": %llu, \"foreign\": %llu, \"drops\": %llu, "
	       "\"open\": %ld, \"sending\": %ld, \"late_slots\": %llu, "
	       "\"skipped_slots\": %llu, \"max_lag_ms\": %.3f, "
	       "\"cpu_user_s\": %.3f, \"cpu_sys_s\": %.3f",
	       (unsigned long long)t.sent, (unsigned long long)t.send_errors,
	       (unsigned long long)t.missed, (unsigned long long)t.received,
	       (unsigned long long)t.foreign, (unsigned long long)t.drops,
	       t.open, t.sending, (unsigned long long)late_slots,
	       (unsigned long long)skipped_slots, max_lag_ns / 1e6,
	       ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
	       ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
}

static void cmd_quit(void)
{
	size_t i;
	int first = 1;

	/* close every open socket so that its drops are final */
	for (i = 0; i < nparties; i++)
		if (parties[i] && parties[i]->fd >= 0)
			cmd_close(parties[i]);
	print_totals();
	/* per party: [id, sent, send_errors, missed, received, foreign, drops] */
	printf(", \"parties\": [");
	for (i = 0; i < nparties; i++) {
		struct party *p = parties[i];

		if (!p)
			continue;
		printf("%s[%zu, %llu, %llu, %llu, %llu, %llu, %llu]", first ? "" : ", ", i,
		       (unsigned long long)p->sent, (unsigned long long)p->send_errors,
		       (unsigned long long)p->missed, (unsigned long long)p->received,
		       (unsigned long long)p->foreign, (unsigned long long)p->drops);
		first = 0;
	}
	printf("]}\n");
	fflush(stdout);
	exit(0);
}

/* One command line (without its newline). */
static void command(char *line)
{
	char word[16];
	long id = -1, port = -1;    /* the second number: a port or a peer */
	struct party *p;
	int n = sscanf(line, "%15s %ld %ld", word, &id, &port);

	if (n < 1)
		return;                     /* blank line */
	if (!strcmp(word, "open") && (n == 2 || n == 3)) {
		cmd_open(id, n == 3 ? port : -1);
	} else if (!strcmp(word, "send") && n == 3) {
		cmd_send(id, port);
	} else if (!strcmp(word, "stop") && n == 2) {
		if ((p = find(id)))
			p->sending = 0;
	} else if (!strcmp(word, "close") && n == 2) {
		if ((p = find(id)))
			cmd_close(p);
	} else if (!strcmp(word, "stats") && n == 1) {
		print_totals();
		printf("}\n");
		fflush(stdout);
	} else if (!strcmp(word, "quit") && n == 1) {
		cmd_quit();
	} else {
		reply("error bad command: %s\n", line);
	}
}

/* Read what stdin has and run every complete line; EOF quits. */
static void read_commands(void)
{
	static char buf[65536];
	static size_t used;
	ssize_t n;
	char *start, *nl;

	n = read(STDIN_FILENO, buf + used, sizeof(buf) - 1 - used);
	if (n == 0)
		cmd_quit();
	if (n < 0)
		return;                     /* EAGAIN: nothing after all */
	used += (size_t)n;
	buf[used] = '\0';
	start = buf;
	while ((nl = memchr(start, '\n', used - (size_t)(start - buf)))) {
		*nl = '\0';
		command(start);
		start = nl + 1;
	}
	used -= (size_t)(start - buf);
	memmove(buf, start, used);
	if (used == sizeof(buf) - 1)
		used = 0;                   /* a line this long is garbage */
}

/* Send one packet for every sending party of slot ``slot`` (0..SLOTS-1), or
 * count it as missed. */
static void send_slot(long slot, int skip)
{
	static unsigned char packet[PACKET_SIZE];
	size_t i;

	if (!packet[RTP_HEADER])
		memset(packet + RTP_HEADER, 0xd5, PACKET_SIZE - RTP_HEADER);
	for (i = (size_t)slot; i < nparties; i += SLOTS) {
		struct party *p = parties[i];
		uint32_t word;

		if (!p || !p->sending)
			continue;
		if (skip) {
			p->missed++;
			continue;
		}
		p->seq++;
		p->timestamp += SAMPLES_PER_PACKET;
		packet[0] = 0x80;           /* version 2, no padding/extension/CSRC */
		packet[1] = 0;              /* no marker, payload type 0 (PCMU) */
		packet[2] = (unsigned char)(p->seq >> 8);
		packet[3] = (unsigned char)p->seq;
		word = htonl(p->timestamp);
		memcpy(packet + 4, &word, 4);
		word = htonl(p->ssrc);
		memcpy(packet + 8, &word, 4);
		if (sendto(p->fd, packet, sizeof(packet), 0,
			   (struct sockaddr *)&p->dest, sizeof(p->dest)) == (ssize_t)sizeof(packet))
			p->sent++;
		else
			p->send_errors++;
	}
}

/* Run the slots that are due: the ones up to now, at most one packet time
 * late; older ones are skipped. */
static void run_slots(long long start, long long *done)
{
	long long now = now_ns();
	long long due = (now - start) / SLOT_NS;   /* slots that have begun */
	long long lag;

	while (*done < due) {
		lag = now - (start + *done * SLOT_NS);
		if (lag > max_lag_ns)
			max_lag_ns = lag;
		if (due - *done > SLOTS) {
			send_slot((long)(*done % SLOTS), 1);
			skipped_slots++;
		} else {
			if (due - *done > 1)
				late_slots++;
			send_slot((long)(*done % SLOTS), 0);
		}
		(*done)++;
	}
}

/* Receive everything queued at this party's socket. */
static void receive(struct party *p)
{
	static unsigned char bufs[BATCH][2048];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	int i, n;

	for (;;) {
		memset(msgs, 0, sizeof(msgs));
		for (i = 0; i < BATCH; i++) {
			iov[i].iov_base = bufs[i];
			iov[i].iov_len = sizeof(bufs[i]);
			msgs[i].msg_hdr.msg_iov = &iov[i];
			msgs[i].msg_hdr.msg_iovlen = 1;
		}
		n = recvmmsg(p->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
		if (n <= 0)
			return;
		for (i = 0; i < n; i++) {
			const unsigned char *b = bufs[i];
			uint32_t ssrc;

			/* ours: RTP version 2 with the peer's SSRC (bytes 8..11) */
			memcpy(&ssrc, b + 8, 4);
			ssrc = ntohl(ssrc);
			if (msgs[i].msg_len >= RTP_HEADER && (b[0] & 0xc0) == 0x80 &&
			    (p->peer_ssrc ? ssrc == p->peer_ssrc : (ssrc >> 24) == (SSRC_TAG >> 24)))
				p->received++;
			else
				p->foreign++;
		}
		if (n < BATCH)
			return;
	}
}

int main(int argc, char **argv)
{
	struct epoll_event ev, events[MAX_EVENTS];
	struct itimerspec every = {{0, SLOT_NS}, {0, SLOT_NS}};
	struct rlimit rl;
	long long start, done = 0;
	int tfd, n, i;

	if (argc > 2) {
		fprintf(stderr, "usage: %s [HOST]\n", argv[0]);
		return 2;
	}
	if (argc == 2)
		host = argv[1];
	/* a socket per party: as many descriptors as the hard limit allows */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (epfd < 0 || tfd < 0 || timerfd_settime(tfd, 0, &every, NULL) < 0) {
		perror("rtpgen: epoll/timerfd");
		return 1;
	}
	ev.events = EPOLLIN;
	ev.data.u64 = EV_STDIN;
	epoll_ctl(epfd, EPOLL_CTL_ADD, STDIN_FILENO, &ev);
	ev.data.u64 = EV_TIMER;
	epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &ev);
	start = now_ns();

	for (;;) {
		n = epoll_wait(epfd, events, MAX_EVENTS, -1);
		if (n < 0 && errno != EINTR) {
			perror("rtpgen: epoll_wait");
			return 1;
		}
		for (i = 0; i < n; i++) {
			uint64_t key = events[i].data.u64;

			if (key == EV_TIMER) {
				uint64_t expirations;

				if (read(tfd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
					perror("rtpgen: timerfd");
				run_slots(start, &done);
			} else if (key == EV_STDIN) {
				read_commands();
			} else if (key < nparties && parties[key] && parties[key]->fd >= 0) {
				receive(parties[key]);
			}
			/* else: a party closed by a command earlier in this batch */
		}
	}
}
