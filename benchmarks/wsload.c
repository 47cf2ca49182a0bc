/* wsload: a tiny WebSocket load generator and echo backend for benchmarks/workers.py.
 *
 * One thread, epoll, non-blocking sockets, no allocation in the loop. Costs a few
 * hundred nanoseconds of user CPU per round trip (the rest is the kernel's loopback).
 *
 *   wsload echo PORT
 *       Echo backend on 127.0.0.1:PORT: answers the upgrade (Sec-WebSocket-Accept with
 *       libcrypto's SHA-1), then sends every data frame back unmasked with its opcode and
 *       FIN bit (so messages and fragments keep their shape), answers ping with pong and
 *       close with close. Prints "ready" once listening.
 *
 *   wsload load HOST PORT PATH CONNS DEPTH SIZE DURATION WARMUP
 *       Closed-loop load: CONNS clients (PATH with "{uuid}" replaced by a fresh UUID4 per
 *       client), each keeping DEPTH binary messages of SIZE bytes in flight (CONNS * DEPTH
 *       in flight in all). Client frames are masked with a fresh key each. Every echo is
 *       checked (opcode, length, the per-connection sequence number in its first 8
 *       bytes, the rest of the payload) and Sec-WebSocket-Accept is verified. Prints JSON
 *       lines like benchmarks/e2e.py's _load: {"event":"start"} after WARMUP seconds,
 *       {"event":"stop"} DURATION seconds later, then {"event":"result",...} with the
 *       p50 and p99 round-trip latency of the counted echoes (seconds; from at most
 *       MAXLAT samples, later ones replacing earlier ones at random).
 *
 * Build: gcc -O2 -o wsload wsload.c -lcrypto   (benchmarks/workers.py does it)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define MAXEV 256

typedef struct {
    int fd;
    int open;               /* upgrade done */
    int closing;            /* close frame queued: shut down once written */
    int writing;            /* EPOLLOUT is on */
    uint8_t *in;            /* received, not yet parsed */
    size_t in_len, in_cap;
    uint8_t *out;           /* to send, not yet written */
    size_t out_len, out_cap;
    uint64_t sent_seq, recv_seq;
    double *sent_at;        /* load: when each message in flight was sent (DEPTH slots) */
    char key[32];           /* load: our Sec-WebSocket-Key */
} conn_t;

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next_rand(void) { /* xorshift64* */
    rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *msg) {
    fprintf(stderr, "wsload: %s%s%s\n", msg, errno ? ": " : "", errno ? strerror(errno) : "");
    exit(1);
}

static void reserve(uint8_t **buf, size_t *cap, size_t need) {
    if (need <= *cap) return;
    size_t cap2 = *cap ? *cap : 4096;
    while (cap2 < need) cap2 *= 2;
    *buf = realloc(*buf, cap2);
    if (!*buf) die("out of memory");
    *cap = cap2;
}

static void accept_key(const char *key, size_t len, char out[32]) {
    char buf[128];
    unsigned char digest[SHA_DIGEST_LENGTH];
    if (len > 64) len = 64;
    memcpy(buf, key, len);
    memcpy(buf + len, GUID, sizeof GUID - 1);
    SHA1((unsigned char *)buf, len + sizeof GUID - 1, digest);
    EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
}

/* The value of header NAME in the HTTP head [head, end), or NULL; *len its length. */
static const char *header(const char *head, const char *end, const char *name, size_t *len) {
    size_t n = strlen(name);
    for (const char *p = head; p && p < end; p = memchr(p, '\n', end - p), p = p ? p + 1 : p) {
        if ((size_t)(end - p) > n + 1 && strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            while (*v == ' ' || *v == '\t') v++;
            const char *e = memchr(v, '\r', end - v);
            if (!e) return NULL;
            *len = e - v;
            return v;
        }
    }
    return NULL;
}

/* Append a frame; mask it (a client) when masked != 0. */
static void put_frame(conn_t *c, int b0, const uint8_t *payload, size_t len, int masked) {
    reserve(&c->out, &c->out_cap, c->out_len + len + 14);
    uint8_t *p = c->out + c->out_len;
    *p++ = (uint8_t)b0;
    uint8_t m = masked ? 0x80 : 0;
    if (len < 126) {
        *p++ = m | (uint8_t)len;
    } else if (len < 65536) {
        *p++ = m | 126; *p++ = (uint8_t)(len >> 8); *p++ = (uint8_t)len;
    } else {
        *p++ = m | 127;
        for (int i = 7; i >= 0; i--) *p++ = (uint8_t)((uint64_t)len >> (8 * i));
    }
    if (masked) {
        uint32_t key = (uint32_t)next_rand();
        memcpy(p, &key, 4);
        p += 4;
        uint64_t k8 = (uint64_t)key | ((uint64_t)key << 32);
        size_t i = 0;
        for (; i + 8 <= len; i += 8) {
            uint64_t w;
            memcpy(&w, payload + i, 8);
            w ^= k8;
            memcpy(p + i, &w, 8);
        }
        const uint8_t *kb = (const uint8_t *)&key;
        for (; i < len; i++) p[i] = payload[i] ^ kb[i & 3];
    } else {
        memcpy(p, payload, len);
    }
    c->out_len = (size_t)(p - c->out) + len;
}

/* Parse one frame at the start of c->in: 0 if incomplete, else its total size; unmasks
 * the payload in place. */
static size_t get_frame(conn_t *c, int *b0, uint8_t **payload, size_t *len) {
    uint8_t *p = c->in;
    size_t have = c->in_len;
    if (have < 2) return 0;
    size_t need = 2, n = p[1] & 0x7f;
    int masked = p[1] & 0x80;
    if (n == 126) {
        need += 2;
        if (have < need) return 0;
        n = ((size_t)p[2] << 8) | p[3];
    } else if (n == 127) {
        need += 8;
        if (have < need) return 0;
        n = 0;
        for (int i = 0; i < 8; i++) n = (n << 8) | p[2 + i];
    }
    uint8_t key[4] = {0};
    if (masked) {
        if (have < need + 4) return 0;
        memcpy(key, p + need, 4);
        need += 4;
    }
    if (have < need + n) return 0;
    *b0 = p[0];
    *payload = p + need;
    *len = n;
    if (masked) {
        uint32_t k; memcpy(&k, key, 4);
        uint64_t k8 = (uint64_t)k | ((uint64_t)k << 32);
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            uint64_t w; memcpy(&w, *payload + i, 8); w ^= k8; memcpy(*payload + i, &w, 8);
        }
        for (; i < n; i++) (*payload)[i] ^= key[i & 3];
    }
    return need + n;
}

static void consume(conn_t *c, size_t n) {
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
}

static int epfd;

static void want_write(conn_t *c, int on) {
    if (c->writing == on) return; /* (no system call when nothing changes) */
    c->writing = on;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Write what can be written; 0 when the connection is done with, -1 on error. */
static int flush_out(conn_t *c) {
    size_t off = 0;
    while (off < c->out_len) {
        ssize_t w = write(c->fd, c->out + off, c->out_len - off);
        if (w < 0) {
            if (errno == EAGAIN) break;
            return -1;
        }
        off += (size_t)w;
    }
    memmove(c->out, c->out + off, c->out_len - off);
    c->out_len -= off;
    want_write(c, c->out_len > 0);
    if (!c->out_len && c->closing) return 0;
    return 1;
}

/* Read what is there; -1 on EOF or error. */
static int fill_in(conn_t *c) {
    for (;;) {
        reserve(&c->in, &c->in_cap, c->in_len + 65536);
        size_t space = c->in_cap - c->in_len;
        ssize_t r = read(c->fd, c->in + c->in_len, space);
        if (r > 0) {
            c->in_len += (size_t)r;
            if ((size_t)r < space) return 1; /* (drained) */
            continue;
        }
        if (r == 0) return -1;
        if (errno == EAGAIN) return 1;
        return -1;
    }
}

static void drop(conn_t *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

static void nonblock(int fd) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ------------------------------------------------------------------ echo backend */

static int echo_input(conn_t *c) {
    if (!c->open) {
        uint8_t *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (!end) return c->in_len > 16384 ? -1 : 1;
        size_t klen;
        const char *key = header((char *)c->in, (char *)end + 2, "Sec-WebSocket-Key", &klen);
        if (!key) return -1;
        char acc[32];
        accept_key(key, klen, acc);
        char resp[256];
        int n = snprintf(resp, sizeof resp,
                         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", acc);
        reserve(&c->out, &c->out_cap, c->out_len + (size_t)n);
        memcpy(c->out + c->out_len, resp, (size_t)n);
        c->out_len += (size_t)n;
        consume(c, (size_t)(end + 4 - c->in));
        c->open = 1;
    }
    int b0;
    uint8_t *payload;
    size_t len, total, off = 0;
    while (!c->closing) {
        /* parse in place from offset off */
        conn_t view = *c;
        view.in = c->in + off;
        view.in_len = c->in_len - off;
        if (!(total = get_frame(&view, &b0, &payload, &len))) break;
        int op = b0 & 0x0f;
        if (op == 8) {
            put_frame(c, 0x88, payload, len < 2 ? len : 2, 0);
            c->closing = 1;
        } else if (op == 9) {
            put_frame(c, 0x8a, payload, len, 0);
        } else if (op != 10) {
            put_frame(c, b0, payload, len, 0);
        }
        off += total;
    }
    consume(c, off);
    return 1;
}

static int run_echo(int port) {
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4096)) die("listen");
    fcntl(ls, F_SETFL, O_NONBLOCK);
    epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, ls, &ev);
    printf("ready\n");
    fflush(stdout);
    struct epoll_event evs[MAXEV];
    for (;;) {
        int n = epoll_wait(epfd, evs, MAXEV, -1);
        if (n < 0 && errno == EINTR) continue;
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept(ls, NULL, NULL)) >= 0) {
                    nonblock(fd);
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    struct epoll_event e2 = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e2);
                }
                continue;
            }
            int ok = 1;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ok = fill_in(c) > 0 && echo_input(c) > 0;
                /* (a peer that closed after its last frame: echo what it sent, then go) */
                if (!ok && c->in_len == 0 && c->out_len == 0) { drop(c); continue; }
            }
            if (!ok || flush_out(c) <= 0) drop(c);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ load generator */

static size_t msg_size;
static int depth;
static uint8_t *tmpl;       /* the payload bytes after the sequence number */
static uint64_t counted;
static int counting;
static uint64_t errors;
/* Round-trip latencies of counted echoes: a bounded sample (reservoir past MAXLAT). */
#define MAXLAT (1u << 21)
static double *lat;
static uint64_t lat_seen;
static double t_io;         /* the time of the read being parsed (one clock read per read) */

static void sample(double v) {
    if (lat_seen < MAXLAT) lat[lat_seen] = v;
    else {
        uint64_t j = next_rand() % (lat_seen + 1);
        if (j < MAXLAT) lat[j] = v;
    }
    lat_seen++;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pctl(double q) {
    size_t n = lat_seen < MAXLAT ? (size_t)lat_seen : MAXLAT;
    if (!n) return 0;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return lat[i];
}

static void send_msg(conn_t *c) {
    static uint8_t *buf;
    if (!buf) buf = malloc(msg_size + 8);
    memcpy(buf, tmpl, msg_size);
    uint64_t seq = c->sent_seq++;
    c->sent_at[seq % (uint64_t)depth] = t_io;
    memcpy(buf, &seq, msg_size < 8 ? msg_size : 8);
    put_frame(c, 0x82, buf, msg_size, 1);
}

static void fail(conn_t *c, const char *what) {
    fprintf(stderr, "wsload: connection %d: %s\n", c->fd, what);
    exit(1);
}

static int load_input(conn_t *c) {
    if (!c->open) {
        uint8_t *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (!end) return 1;
        if (c->in_len < 12 || memcmp(c->in, "HTTP/1.1 101", 12) != 0) {
            *end = 0;
            fail(c, (char *)c->in);
        }
        size_t alen;
        const char *acc = header((char *)c->in, (char *)end + 2, "Sec-WebSocket-Accept",
                                 &alen);
        char want[32];
        accept_key(c->key, strlen(c->key), want);
        if (!acc || alen != strlen(want) || memcmp(acc, want, alen) != 0)
            fail(c, "bad Sec-WebSocket-Accept");
        consume(c, (size_t)(end + 4 - c->in));
        c->open = 1;
        t_io = now();
        for (int i = 0; i < depth; i++) send_msg(c);
    }
    int b0;
    uint8_t *payload;
    size_t len, total, off = 0;
    for (;;) {
        conn_t view = *c;
        view.in = c->in + off;
        view.in_len = c->in_len - off;
        if (!(total = get_frame(&view, &b0, &payload, &len))) break;
        off += total;
        int op = b0 & 0x0f;
        if (op == 9) { put_frame(c, 0x8a, payload, len, 1); continue; }
        if (op == 10) continue;
        if (op == 8) fail(c, "closed by the peer");
        if (b0 != 0x82 || len != msg_size) fail(c, "echo of another type or length");
        uint64_t seq = 0, want = c->recv_seq++;
        memcpy(&seq, payload, len < 8 ? len : 8);
        if (len < 8) want &= (1ull << (8 * len)) - 1;
        if (seq != want) fail(c, "echo out of order (lost or duplicated message)");
        if (len > 8 && memcmp(payload + 8, tmpl + 8, len - 8) != 0) fail(c, "echo corrupted");
        if (counting) {
            counted++;
            sample(t_io - c->sent_at[want % (uint64_t)depth]);
        }
        send_msg(c);
    }
    consume(c, off);
    return 1;
}

static int connect_to(const char *host, int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) die("HOST must be an IPv4 address");
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) die("connect");
    nonblock(fd);
    return fd;
}

static int run_load(const char *host, int port, const char *path, int conns, double duration,
                    double warmup) {
    rng ^= (uint64_t)getpid() << 17 ^ (uint64_t)(now() * 1e9);
    tmpl = malloc(msg_size + 8);
    lat = malloc(MAXLAT * sizeof(double));
    for (size_t i = 0; i < msg_size; i++) tmpl[i] = (uint8_t)('a' + i % 26);
    epfd = epoll_create1(0);
    for (int i = 0; i < conns; i++) {
        conn_t *c = calloc(1, sizeof *c);
        c->sent_at = calloc((size_t)depth, sizeof(double));
        c->fd = connect_to(host, port);
        uint8_t raw[16];
        for (int j = 0; j < 16; j++) raw[j] = (uint8_t)next_rand();
        EVP_EncodeBlock((unsigned char *)c->key, raw, 16);
        char uuid[37];
        uint64_t h = next_rand(), l = next_rand();
        snprintf(uuid, sizeof uuid, "%08x-%04x-4%03x-%04x-%012llx", (unsigned)(h >> 32),
                 (unsigned)(h >> 16) & 0xffff, (unsigned)h & 0xfff,
                 (unsigned)(0x8000 | ((l >> 48) & 0x3fff)),
                 (unsigned long long)(l & 0xffffffffffffull));
        char target[512];
        const char *u = strstr(path, "{uuid}");
        if (u) snprintf(target, sizeof target, "%.*s%s%s", (int)(u - path), path, uuid, u + 6);
        else snprintf(target, sizeof target, "%s", path);
        char req[1024];
        int n = snprintf(req, sizeof req,
                         "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n", target, host, port, c->key);
        reserve(&c->out, &c->out_cap, (size_t)n);
        memcpy(c->out, req, (size_t)n);
        c->out_len = (size_t)n;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
        if (flush_out(c) < 0) die("write");
    }
    double t0 = now(), start = 0, elapsed = 0;
    int phase = 0; /* 0 warm-up, 1 counting */
    struct epoll_event evs[MAXEV];
    for (;;) {
        double t = now();
        if (phase == 0 && t >= t0 + warmup) {
            phase = 1;
            counting = 1;
            start = now();
            printf("{\"event\": \"start\"}\n");
            fflush(stdout);
        } else if (phase == 1 && t >= start + duration) {
            counting = 0;
            elapsed = now() - start;
            printf("{\"event\": \"stop\"}\n");
            fflush(stdout);
            break;
        }
        int n = epoll_wait(epfd, evs, MAXEV, 10);
        if (n < 0 && errno == EINTR) continue;
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                if (fill_in(c) < 0) fail(c, "connection lost");
                t_io = now();
                load_input(c);
            }
            if (flush_out(c) < 0) fail(c, "write failed");
        }
    }
    qsort(lat, lat_seen < MAXLAT ? (size_t)lat_seen : MAXLAT, sizeof(double), cmp_double);
    printf("{\"event\": \"result\", \"messages\": %llu, \"elapsed\": %.6f, \"errors\": %llu, "
           "\"conns\": %d, \"depth\": %d, \"p50\": %.9f, \"p99\": %.9f}\n",
           (unsigned long long)counted, elapsed, (unsigned long long)errors, conns, depth,
           pctl(0.50), pctl(0.99));
    fflush(stdout);
    return 0; /* (the sockets close at exit) */
}

int main(int argc, char **argv) {
    /* A peer that goes away while we write must cost its connection, not the process. */
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && strcmp(argv[1], "echo") == 0) return run_echo(atoi(argv[2]));
    if (argc == 10 && strcmp(argv[1], "load") == 0) {
        depth = atoi(argv[6]);
        msg_size = (size_t)atol(argv[7]);
        if (depth < 1) die("DEPTH must be at least 1");
        return run_load(argv[2], atoi(argv[3]), argv[4], atoi(argv[5]), atof(argv[8]),
                        atof(argv[9]));
    }
    fprintf(stderr, "usage: wsload echo PORT\n"
                    "       wsload load HOST PORT PATH CONNS DEPTH SIZE DURATION WARMUP\n");
    return 2;
}
