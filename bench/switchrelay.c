/*
 * switchrelay: a minimal UDP relay in C for bench/switch_relay.py, to tell
 * what a second worker costs when it is a process and when it is a thread.
 *
 *   switchrelay MODE WORKERS HOST BASE_PORT [PARTY_HOST] < CALLS
 *
 * CALLS is one line per call, "A_PORT B_PORT": the two parties' ports on
 * PARTY_HOST (default HOST).  Call i gets the relay ports BASE_PORT + 2i (party A sends there; it
 * is relayed to B from BASE_PORT + 2i + 1) and BASE_PORT + 2i + 1 (party B
 * sends there; relayed to A from BASE_PORT + 2i), as omnirtp's companions
 * and rtpengine's sockets do.  Call i belongs to worker i % WORKERS, which has
 * an epoll of its own and serves it: wait, read each ready socket once, send,
 * wait again (omnirtp's media loop, without the Python around it).
 *
 * MODE "procs": worker 0 is this process and the others are forked
 * children; "threads": the others are threads of this process.  MODE
 * "shared" is rtpengine's shape instead (its default, without
 * --poller-per-thread): the calls are not divided; every socket is in ONE
 * epoll, edge-triggered, and WORKERS threads of this process all block in
 * epoll_wait on it; a thread given a socket reads it until EAGAIN, sending
 * each datagram on.  All sockets are bound before the workers start.
 * Prints "ready PID..." (every process) on stdout once the workers run,
 * then relays until killed.
 *
 * Build: gcc -O2 -Wall -Wextra -pthread -o switchrelay switchrelay.c
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_CALLS 20000
#define MAX_WORKERS 16

struct leg {
    int fd;                    /* the socket a party sends to */
    int out;                   /* the socket the other party hears from */
    struct sockaddr_in dest;   /* the other party */
};

static struct leg *legs;       /* 2 per call */
static int calls, workers;
static int shared_ep = -1;     /* MODE "shared": the one epoll of every socket */

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static int bound(struct in_addr host, int port)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = host};
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("bind");
    return fd;
}

static void *serve(void *arg)
{
    long w = (long)arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    for (int i = (int)w; i < calls; i += workers)
        for (int k = 0; k < 2; k++) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &legs[2 * i + k]};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, legs[2 * i + k].fd, &ev) < 0)
                die("epoll_ctl");
        }
    struct epoll_event events[64];
    unsigned char buf[2048];
    for (;;) {
        int n = epoll_wait(ep, events, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int j = 0; j < n; j++) {
            struct leg *l = events[j].data.ptr;
            ssize_t len = read(l->fd, buf, sizeof buf);
            if (len < 0)
                continue;
            sendto(l->out, buf, (size_t)len, 0, (struct sockaddr *)&l->dest, sizeof l->dest);
        }
    }
    return NULL;
}

/* MODE "shared": any thread serves any socket.  Edge-triggered, so a
 * datagram's arrival is reported to one waiting thread only, and that
 * thread empties the socket (the next arrival is a new edge, which may go
 * to another thread: both then read it, and one meets EAGAIN). */
static void *serve_shared(void *arg)
{
    (void)arg;
    struct epoll_event events[64];
    unsigned char buf[2048];
    for (;;) {
        int n = epoll_wait(shared_ep, events, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int j = 0; j < n; j++) {
            struct leg *l = events[j].data.ptr;
            for (;;) {
                ssize_t len = read(l->fd, buf, sizeof buf);
                if (len < 0) {
                    if (errno == EINTR)
                        continue;
                    break;  /* EAGAIN: emptied */
                }
                sendto(l->out, buf, (size_t)len, 0, (struct sockaddr *)&l->dest,
                       sizeof l->dest);
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 5 && argc != 6) {
        fprintf(stderr,
                "usage: %s procs|threads|shared WORKERS HOST BASE_PORT [PARTY_HOST] < CALLS\n",
                argv[0]);
        return 2;
    }
    int shared = strcmp(argv[1], "shared") == 0;
    int threads = shared || strcmp(argv[1], "threads") == 0;
    if (!threads && strcmp(argv[1], "procs") != 0) {
        fprintf(stderr, "MODE must be procs, threads or shared\n");
        return 2;
    }
    void *(*worker)(void *) = shared ? serve_shared : serve;
    workers = atoi(argv[2]);
    if (workers < 1 || workers > MAX_WORKERS) {
        fprintf(stderr, "WORKERS must be 1..%d\n", MAX_WORKERS);
        return 2;
    }
    struct in_addr host;
    if (inet_pton(AF_INET, argv[3], &host) != 1) {
        fprintf(stderr, "HOST must be an IPv4 address\n");
        return 2;
    }
    struct in_addr party = host;
    if (argc == 6 && inet_pton(AF_INET, argv[5], &party) != 1) {
        fprintf(stderr, "PARTY_HOST must be an IPv4 address\n");
        return 2;
    }
    int base = atoi(argv[4]);
    legs = calloc(2 * MAX_CALLS, sizeof *legs);
    if (legs == NULL)
        die("calloc");
    int pa, pb;
    while (calls < MAX_CALLS && scanf("%d %d", &pa, &pb) == 2) {
        struct leg *a = &legs[2 * calls], *b = &legs[2 * calls + 1];
        a->fd = bound(host, base + 2 * calls);
        b->fd = bound(host, base + 2 * calls + 1);
        a->out = b->fd;
        b->out = a->fd;
        a->dest = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(pb), .sin_addr = party};
        b->dest = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(pa), .sin_addr = party};
        calls++;
    }
    if (shared) {
        shared_ep = epoll_create1(EPOLL_CLOEXEC);
        if (shared_ep < 0)
            die("epoll_create1");
        for (int i = 0; i < 2 * calls; i++) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.ptr = &legs[i]};
            if (epoll_ctl(shared_ep, EPOLL_CTL_ADD, legs[i].fd, &ev) < 0)
                die("epoll_ctl");
        }
    }
    pid_t pids[MAX_WORKERS];
    pids[0] = getpid();
    for (long w = 1; w < workers; w++) {
        if (threads) {
            pthread_t t;
            if (pthread_create(&t, NULL, worker, (void *)w) != 0)
                die("pthread_create");
        } else {
            pid_t pid = fork();
            if (pid < 0)
                die("fork");
            if (pid == 0) {
                serve((void *)w);
                return 0;
            }
            pids[w] = pid;
        }
    }
    printf("ready");
    for (int w = 0; w < (threads ? 1 : workers); w++)
        printf(" %d", (int)pids[w]);
    printf("\n");
    fflush(stdout);
    worker((void *)0);
    return 0;
}
