/*
 * qemu_like: a C program that embeds libspice_shim the way QEMU's display code would, and
 * checks the C contract of spice-shim.h.
 *
 *   qemu_like MODE [OPTIONS]
 *
 * The server is created with "port=0,video-codecs=h264" followed by OPTIONS (e.g.
 * "pipelines=/path/to/pipelines"). MODE:
 *   auto    60 Hz, each stage held for 1 s; nobody needs to connect.
 *   client  60 Hz; at each hold point it prints "HOLD <name> <w>x<h>" and keeps drawing until
 *           a line arrives on stdin (a driver takes a client screenshot meanwhile). EOF on
 *           stdin ends every later hold at once.
 *   quick   30 Hz, stages of 0.3 s (for valgrind).
 *   probe   only creates and frees the server; prints "NEW OK" or "NEW FAIL <error>".
 *   leak    creates the server, draws once, frees it, then loses 4242 bytes on purpose (to
 *           check that valgrind reports a leak of the embedding program).
 *   cursor  no display: the pointer only, driven line by line from stdin (see cursor_mode()).
 *
 * It prints "PORT <n>" (flushed) as soon as the server listens. What it does, in order:
 *   - API checks without a server: bad options, NULL handling, fd ownership on a NULL shim;
 *   - at each stage: a pointer shape (1x1 to 512x512, see stage_cursors), refused shapes
 *     (0x0, 513x1, hot spot outside, NULL pixels), and at each display refresh a move, hidden
 *     one refresh block in four, with the stage's shape defined again now and then;
 *   - "first": 1280x720 XRGB8888 colour bars via spice_shim_gl_scanout, double buffered (it
 *     renders only into a buffer whose cookie came back, and passes a dup() of the buffer's
 *     memfd at each buffer switch, as QEMU does);
 *   - the scanout replaced mid-stream by new buffers of the same size;
 *   - "small": resized to 800x600;
 *   - 1280x720 through spice_shim_gl_scanout2 (one plane, with an offset and a padded stride);
 *   - NV12 through spice_shim_gl_scanout2, two planes in one memfd (the same fd number for
 *     both planes, then two different numbers);
 *   - a tiled modifier: must be refused (spice_shim_last_error) and its draw must come back
 *     at once;
 *   - scanout disabled (fd -1, and an fd with width 0): draws come back at once;
 *   - "final": back to 1280x720 via spice_shim_gl_scanout;
 *   - spice_shim_free, then: every cookie came back exactly once, never on the main thread,
 *     none after spice_shim_free returned, and no memfd handed to the shim is still open.
 * Exit code 0 on success; otherwise 1 with "FAIL: ..." on stderr. QEMU_LIKE_SLOW=1 in the
 * environment relaxes the "at once" time limit from 0.5 s to 5 s (for valgrind).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "spice-shim.h"

#define FOURCC(a, b, c, d) \
    ((uint32_t)(a) | ((uint32_t)(b) << 8) | ((uint32_t)(c) << 16) | ((uint32_t)(d) << 24))
#define DRM_FORMAT_XRGB8888 FOURCC('X', 'R', '2', '4')
#define DRM_FORMAT_NV12 FOURCC('N', 'V', '1', '2')
#define DRM_FORMAT_MOD_LINEAR 0ULL
#define DRM_FORMAT_MOD_INVALID 0x00ffffffffffffffULL
#define I915_FORMAT_MOD_X_TILED 0x0100000000000001ULL

#define MAX_COOKIES 20000
#define MEMFD_PREFIX "qemu-like-"

/* ------------------------------------------------------------------------------------------ */
/* failures                                                                                    */

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(1);
}

static void check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void check(bool ok, const char *fmt, ...)
{
    va_list ap;
    if (ok) {
        return;
    }
    fprintf(stderr, "FAIL: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------------------------------ */
/* completions: the shim thread records the cookie and wakes the main loop (QEMU: a BH)        */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned calls[MAX_COOKIES];   /* callbacks per cookie, under lock */
static uint64_t queue[MAX_COOKIES];   /* returned cookies not yet seen by the main loop */
static size_t queued;                 /* under lock */
static unsigned bad_cookies;          /* out of range, under lock */
static unsigned on_main_thread;       /* callbacks run on the main thread, under lock */
static unsigned after_free;           /* callbacks after spice_shim_free returned, under lock */
static bool freed;                    /* under lock */
static pthread_t main_thread;
static int wake_pipe[2];

static void async_complete(void *opaque, uint64_t cookie)
{
    check(opaque == (void *)&lock, "callback got opaque %p", opaque);
    pthread_mutex_lock(&lock);
    if (pthread_equal(pthread_self(), main_thread)) {
        on_main_thread++;
    }
    if (freed) {
        after_free++;
    }
    if (cookie == 0 || cookie >= MAX_COOKIES) {
        bad_cookies++;
    } else {
        calls[cookie]++;
        if (queued < MAX_COOKIES) {
            queue[queued++] = cookie;
        }
    }
    pthread_mutex_unlock(&lock);
    /* Non-blocking: a full pipe already means "wake up". */
    ssize_t r = write(wake_pipe[1], "c", 1);
    (void)r;
}

/* Input callbacks: nothing sends input here; they only have to link and be accepted. */
static void on_key(void *opaque, uint32_t scancode, int down)
{
    (void)opaque;
    printf("key %#x %d\n", scancode, down);
}

static void on_button(void *opaque, uint32_t button, int down, uint32_t buttons)
{
    (void)opaque;
    printf("button %u %d %#x\n", button, down, buttons);
}

/* ------------------------------------------------------------------------------------------ */
/* guest buffers                                                                               */

enum kind {
    KIND_SCANOUT,     /* XR24 through spice_shim_gl_scanout */
    KIND_SCANOUT2,    /* XR24 through spice_shim_gl_scanout2, offset and padded stride */
    KIND_NV12,        /* NV12 through spice_shim_gl_scanout2, two planes in one memfd */
};

struct buffer {
    int fd;
    uint8_t *map;
    size_t size;
    uint32_t width, height, stride, offset;
    uint64_t busy; /* cookie of the frame the shim may still read, 0 if free */
    int square_x;  /* where the moving square was drawn, -1 if nowhere */
};

struct bufset {
    enum kind kind;
    struct buffer buf[2];
    int current; /* buffer given to the shim as the scanout, -1 if none */
};

static const uint8_t bars[8][3] = {
    {255, 255, 255}, {255, 255, 0}, {0, 255, 255}, {0, 255, 0},
    {255, 0, 255},   {255, 0, 0},   {0, 0, 255},   {0, 0, 0},
};

static unsigned memfd_seq;

static int bar_of(uint32_t x, uint32_t width)
{
    /* Bar i spans [i * w / 8, (i + 1) * w / 8), as test_guest::bar_span. */
    for (int i = 0; i < 8; i++) {
        if ((uint64_t)x < (uint64_t)(i + 1) * width / 8) {
            return i;
        }
    }
    return 7;
}

static void put_xrgb(struct buffer *b, uint32_t x, uint32_t y, const uint8_t rgb[3])
{
    uint8_t *p = b->map + b->offset + (size_t)y * b->stride + (size_t)x * 4;
    p[0] = rgb[2];
    p[1] = rgb[1];
    p[2] = rgb[0];
    p[3] = 0xff;
}

static void fill_bars_xrgb(struct buffer *b)
{
    for (uint32_t x = 0; x < b->width; x++) {
        put_xrgb(b, x, 0, bars[bar_of(x, b->width)]);
    }
    for (uint32_t y = 1; y < b->height; y++) {
        memcpy(b->map + b->offset + (size_t)y * b->stride, b->map + b->offset,
               (size_t)b->width * 4);
    }
}

static void fill_bars_nv12(struct buffer *b)
{
    uint8_t *yp = b->map;
    uint8_t *uvp = b->map + (size_t)b->stride * b->height;
    for (uint32_t x = 0; x < b->width; x++) {
        const uint8_t *c = bars[bar_of(x, b->width)];
        int r = c[0], g = c[1], bl = c[2];
        /* BT.601, limited range */
        yp[x] = (uint8_t)(((66 * r + 129 * g + 25 * bl + 128) >> 8) + 16);
        if (x % 2 == 0) {
            uvp[x] = (uint8_t)(((-38 * r - 74 * g + 112 * bl + 128) >> 8) + 128);
            uvp[x + 1] = (uint8_t)(((112 * r - 94 * g - 18 * bl + 128) >> 8) + 128);
        }
    }
    for (uint32_t y = 1; y < b->height; y++) {
        memcpy(yp + (size_t)y * b->stride, yp, b->width);
    }
    for (uint32_t y = 1; y < b->height / 2; y++) {
        memcpy(uvp + (size_t)y * b->stride, uvp, b->width);
    }
}

/* The moving grey square in the bottom 10 %: restore the bars where it was, draw it anew. */
static void draw_square(struct buffer *b, uint64_t frame)
{
    uint32_t side = b->height / 20;
    uint32_t y0 = b->height - b->height / 10 + (b->height / 10 - side) / 2;
    static const uint8_t grey[3] = {128, 128, 128};
    if (b->square_x >= 0) {
        for (uint32_t y = y0; y < y0 + side; y++) {
            for (uint32_t x = (uint32_t)b->square_x; x < (uint32_t)b->square_x + side; x++) {
                put_xrgb(b, x, y, bars[bar_of(x, b->width)]);
            }
        }
    }
    uint32_t x0 = (uint32_t)((frame * 8) % (b->width - side));
    for (uint32_t y = y0; y < y0 + side; y++) {
        for (uint32_t x = x0; x < x0 + side; x++) {
            put_xrgb(b, x, y, grey);
        }
    }
    b->square_x = (int)x0;
}

static void make_buffer(struct buffer *b, enum kind kind, uint32_t w, uint32_t h)
{
    char name[64];
    memset(b, 0, sizeof(*b));
    b->width = w;
    b->height = h;
    b->square_x = -1;
    switch (kind) {
    case KIND_SCANOUT:
        b->stride = w * 4;
        b->size = (size_t)b->stride * h;
        break;
    case KIND_SCANOUT2:
        b->stride = w * 4 + 256;
        b->offset = 4096;
        b->size = b->offset + (size_t)b->stride * h;
        break;
    case KIND_NV12:
        b->stride = w;
        b->size = (size_t)w * h * 3 / 2;
        break;
    }
    snprintf(name, sizeof(name), MEMFD_PREFIX "%u", memfd_seq++);
    b->fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    check(b->fd >= 0, "memfd_create: %s", strerror(errno));
    check(ftruncate(b->fd, (off_t)b->size) == 0, "ftruncate: %s", strerror(errno));
    /* The shim refuses memfds that could shrink under a reader (SIGBUS). */
    check(fcntl(b->fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0, "F_ADD_SEALS: %s", strerror(errno));
    b->map = mmap(NULL, b->size, PROT_READ | PROT_WRITE, MAP_SHARED, b->fd, 0);
    check(b->map != MAP_FAILED, "mmap: %s", strerror(errno));
    if (kind == KIND_NV12) {
        fill_bars_nv12(b);
    } else {
        fill_bars_xrgb(b);
    }
}

static void make_set(struct bufset *s, enum kind kind, uint32_t w, uint32_t h)
{
    s->kind = kind;
    s->current = -1;
    make_buffer(&s->buf[0], kind, w, h);
    make_buffer(&s->buf[1], kind, w, h);
}

static void free_set(struct bufset *s)
{
    for (int i = 0; i < 2; i++) {
        check(s->buf[i].busy == 0, "freeing a buffer still in use");
        munmap(s->buf[i].map, s->buf[i].size);
        close(s->buf[i].fd);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* the "display"                                                                               */

static SpiceShim *shim;
static enum { MODE_AUTO, MODE_CLIENT, MODE_QUICK, MODE_PROBE, MODE_LEAK, MODE_CURSOR } mode;
static double period = 1.0 / 60;
static double stage_s = 0.5, hold_s = 1.0;
/* How soon a draw without a usable scanout must come back: well below the 1-s timeouts that
 * would hide a missing completion (more under valgrind, which runs one thread at a time). */
static double quick_limit_s = 0.5;
static uint64_t next_cookie = 1;
static struct buffer *owner[MAX_COOKIES]; /* buffer each cookie's frame was drawn into */
static uint64_t frames, skipped;
static double max_draw_call_s;
static bool stdin_open = true;

/* The main loop's bottom half: mark the buffers of returned cookies free. */
static void process_completions(void)
{
    uint64_t got[256];
    size_t n;
    char sink[64];
    while (read(wake_pipe[0], sink, sizeof(sink)) > 0) {
    }
    do {
        pthread_mutex_lock(&lock);
        n = queued < 256 ? queued : 256;
        memcpy(got, queue + (queued - n), n * sizeof(got[0]));
        queued -= n;
        pthread_mutex_unlock(&lock);
        for (size_t i = 0; i < n; i++) {
            struct buffer *b = owner[got[i]];
            if (b && b->busy == got[i]) {
                b->busy = 0;
            }
            owner[got[i]] = NULL;
        }
    } while (n > 0);
}

static uint64_t draw(uint32_t x, uint32_t y, uint32_t w, uint32_t h, struct buffer *b)
{
    uint64_t cookie = next_cookie++;
    check(cookie < MAX_COOKIES, "too many cookies");
    owner[cookie] = b;
    if (b) {
        b->busy = cookie;
    }
    double t0 = now_s();
    spice_shim_gl_draw_async(shim, x, y, w, h, cookie);
    double dt = now_s() - t0;
    if (dt > max_draw_call_s) {
        max_draw_call_s = dt;
    }
    return cookie;
}

static void give_scanout(struct bufset *s, int i)
{
    struct buffer *b = &s->buf[i];
    switch (s->kind) {
    case KIND_SCANOUT:
        spice_shim_gl_scanout(shim, dup(b->fd), b->width, b->height, b->stride,
                              DRM_FORMAT_XRGB8888, 1);
        break;
    case KIND_SCANOUT2: {
        int fds[1] = {dup(b->fd)};
        uint32_t offsets[1] = {b->offset};
        uint32_t strides[1] = {b->stride};
        spice_shim_gl_scanout2(shim, fds, b->width, b->height, offsets, strides, 1,
                               DRM_FORMAT_XRGB8888, DRM_FORMAT_MOD_LINEAR, 1);
        break;
    }
    case KIND_NV12: {
        /* Buffer 0: one fd number for both planes (owned once); buffer 1: two numbers. */
        int fd = dup(b->fd);
        int fds[2] = {fd, i == 0 ? fd : dup(b->fd)};
        uint32_t offsets[2] = {0, b->stride * b->height};
        uint32_t strides[2] = {b->stride, b->stride};
        spice_shim_gl_scanout2(shim, fds, b->width, b->height, offsets, strides, 2,
                               DRM_FORMAT_NV12, DRM_FORMAT_MOD_INVALID, 1);
        break;
    }
    }
    const char *err = spice_shim_last_error();
    check(err == NULL, "scanout (kind %d) refused: %s", (int)s->kind, err ? err : "");
    s->current = i;
}

static void cursor_tick(void);

/* One display refresh: move the pointer; render into a free buffer and draw it, or skip the
 * tick. */
static void tick(struct bufset *s)
{
    int pick = -1;
    cursor_tick();
    for (int k = 1; k <= 2; k++) {
        int i = (s->current + k + 2) % 2;
        if (s->buf[i].busy == 0) {
            pick = i;
            break;
        }
    }
    if (pick < 0) {
        skipped++;
        return;
    }
    struct buffer *b = &s->buf[pick];
    if (s->kind != KIND_NV12) {
        draw_square(b, frames);
    }
    if (s->current != pick) {
        give_scanout(s, pick);
    }
    draw(0, 0, b->width, b->height, b);
    frames++;
}

/* Runs the display for `seconds`, or, for a hold in client mode, until a line on stdin. */
static void run(struct bufset *s, double seconds, const char *hold)
{
    bool wait_line = hold && mode == MODE_CLIENT && stdin_open;
    if (hold) {
        printf("HOLD %s %ux%u\n", hold, s->buf[0].width, s->buf[0].height);
        fflush(stdout);
    }
    double start = now_s(), next = start;
    for (;;) {
        double t = now_s();
        if (!wait_line && t - start >= seconds) {
            break;
        }
        if (wait_line && t - start >= 120) {
            fail("hold %s: no line on stdin within 120 s", hold);
        }
        if (t >= next) {
            tick(s);
            next += period;
            if (next < t) {
                next = t + period;
            }
        }
        struct pollfd p[2] = {{.fd = wake_pipe[0], .events = POLLIN},
                              {.fd = 0, .events = POLLIN}};
        int timeout = (int)((next - now_s()) * 1000);
        if (timeout < 0) {
            timeout = 0;
        }
        int r = poll(p, wait_line ? 2 : 1, timeout);
        check(r >= 0 || errno == EINTR, "poll: %s", strerror(errno));
        if (r > 0 && (p[0].revents & POLLIN)) {
            process_completions();
        }
        if (wait_line && r > 0 && (p[1].revents & (POLLIN | POLLHUP))) {
            char line[256];
            if (!fgets(line, sizeof(line), stdin)) {
                stdin_open = false;
            }
            break;
        }
    }
    process_completions();
}

/* Waits until every frame drawn into `s` came back. */
static void drain(struct bufset *s, const char *what)
{
    double start = now_s();
    while (s->buf[0].busy || s->buf[1].busy) {
        check(now_s() - start < 20, "%s: cookies %" PRIu64 "/%" PRIu64 " not back after 20 s",
              what, s->buf[0].busy, s->buf[1].busy);
        struct pollfd p = {.fd = wake_pipe[0], .events = POLLIN};
        poll(&p, 1, 50);
        process_completions();
    }
}

/* A draw that must come back at once (no usable scanout), i.e. within quick_limit_s. */
static void draw_expect_quick(const char *what)
{
    uint64_t cookie = draw(0, 0, 64, 64, NULL);
    double start = now_s();
    for (;;) {
        pthread_mutex_lock(&lock);
        unsigned n = calls[cookie];
        pthread_mutex_unlock(&lock);
        if (n > 0) {
            break;
        }
        check(now_s() - start < quick_limit_s, "%s: cookie %" PRIu64 " not back within %.0f s",
              what, cookie, quick_limit_s);
        struct pollfd p = {.fd = wake_pipe[0], .events = POLLIN};
        poll(&p, 1, 10);
        process_completions();
    }
}

/* Our memfds that are still open in this process, named MEMFD_PREFIX. */
static int open_memfds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;
    check(d != NULL, "opendir /proc/self/fd: %s", strerror(errno));
    while ((e = readdir(d)) != NULL) {
        char path[300], target[300];
        snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(path, target, sizeof(target) - 1);
        if (len <= 0) {
            continue;
        }
        target[len] = 0;
        if (strstr(target, "memfd:" MEMFD_PREFIX)) {
            n++;
        }
    }
    closedir(d);
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* the pointer (QEMU: dpy_cursor_define, dpy_mouse_set)                                        */

/* Pixel (x, y) of the test shape w x h with hot spot (hot_x, hot_y): ARGB8888 in a native
 * word, straight alpha; the alphas cycle through 0, 255, 128 and 37. c_embedding.rs computes
 * the same formula (Shape::pixel) to check the bytes a spice-gtk client gets. */
static uint32_t cursor_pixel(uint32_t w, uint32_t h, uint32_t hot_x, uint32_t hot_y, uint32_t x,
                             uint32_t y)
{
    static const uint32_t alphas[4] = {0, 255, 128, 37};
    uint32_t a = alphas[(x + 2 * y + w + h) % 4];
    uint32_t r = (x * 8 + w) & 0xff;
    uint32_t g = (y * 8 + h) & 0xff;
    uint32_t b = (x * y + hot_x + hot_y) & 0xff;
    return a << 24 | r << 16 | g << 8 | b;
}

/* Defines the test shape (or passes NULL pixels); returns spice_shim_cursor_define's result.
 * The buffer is scribbled over and freed at once: the shim must have copied it. */
static int define_cursor(uint32_t w, uint32_t h, uint32_t hot_x, uint32_t hot_y, bool null_argb)
{
    size_t n = (size_t)w * h;
    check(w <= 4096 && h <= 4096, "test shape %ux%u too large", w, h);
    uint32_t *argb = malloc((n ? n : 1) * sizeof(uint32_t));
    check(argb != NULL, "malloc: %s", strerror(errno));
    for (uint32_t y = 0; y < h; y++) {
        for (uint32_t x = 0; x < w; x++) {
            argb[(size_t)y * w + x] = cursor_pixel(w, h, hot_x, hot_y, x, y);
        }
    }
    int r = spice_shim_cursor_define(shim, w, h, hot_x, hot_y, null_argb ? NULL : argb);
    for (size_t i = 0; i < n; i++) {
        argb[i] = 0xdeadbeef;
    }
    free(argb);
    return r;
}

/* A shape that must be refused, with an error naming `what`. */
static void define_refused(uint32_t w, uint32_t h, uint32_t hot_x, uint32_t hot_y,
                           bool null_argb, const char *what)
{
    int r = define_cursor(w, h, hot_x, hot_y, null_argb);
    const char *err = spice_shim_last_error();
    check(r == -1, "cursor %ux%u hot (%u, %u)%s accepted", w, h, hot_x, hot_y,
          null_argb ? " with NULL pixels" : "");
    check(err && strstr(err, what), "cursor %ux%u hot (%u, %u): error %s does not name '%s'", w,
          h, hot_x, hot_y, err ? err : "(null)", what);
}

struct cursor_def {
    uint32_t w, h, hot_x, hot_y;
};

/* The shape of each stage of the sequence; the first one is current at hold "first". */
static const struct cursor_def stage_cursors[] = {
    {17, 31, 5, 29}, {1, 1, 0, 0}, {64, 64, 63, 1}, {512, 512, 256, 300}, {33, 7, 32, 6},
    {24, 24, 12, 3},
};
static struct cursor_def current_cursor;
static uint64_t cursor_ticks;

/* A new stage: its shape, refused shapes that must change nothing, hide and show. */
static void cursor_stage(unsigned stage)
{
    current_cursor = stage_cursors[stage % (sizeof(stage_cursors) / sizeof(stage_cursors[0]))];
    const struct cursor_def *c = &current_cursor;
    int r = define_cursor(c->w, c->h, c->hot_x, c->hot_y, false);
    const char *err = spice_shim_last_error();
    check(r == 0 && err == NULL, "cursor %ux%u refused: %s", c->w, c->h, err ? err : "");
    define_refused(0, 0, 0, 0, false, "0x0");
    define_refused(513, 1, 0, 0, false, "513x1");
    define_refused(4, 4, 4, 0, false, "hot spot (4, 0)");
    define_refused(4, 4, 0, 4, false, "hot spot (0, 4)");
    define_refused(4, 4, 0, 0, true, "argb is NULL");
    spice_shim_mouse_set(shim, 10, 10, 0);
    check(spice_shim_last_error() == NULL, "hiding the pointer failed");
    spice_shim_mouse_set(shim, 20, 20, 1);
    check(spice_shim_last_error() == NULL, "showing the pointer failed");
}

/* At each display refresh: the pointer moves, hidden one block of 20 refreshes in four; every
 * 90 refreshes the stage's shape is defined again (clients have it cached). */
static void cursor_tick(void)
{
    uint64_t t = cursor_ticks++;
    spice_shim_mouse_set(shim, (int32_t)((t * 7) % 1280), (int32_t)((t * 3) % 720),
                         (t / 20) % 4 != 3);
    if (t % 90 == 45) {
        const struct cursor_def *c = &current_cursor;
        int r = define_cursor(c->w, c->h, c->hot_x, c->hot_y, false);
        const char *err = spice_shim_last_error();
        check(r == 0 && err == NULL, "cursor defined again: %s", err ? err : "");
    }
}

/* ------------------------------------------------------------------------------------------ */

static void api_checks_without_server(void)
{
    /* A NULL shim still takes (closes) the fd. No other thread exists yet, so the number
     * cannot be reused behind our back. */
    int fd = memfd_create(MEMFD_PREFIX "null", MFD_CLOEXEC);
    check(fd >= 0, "memfd_create: %s", strerror(errno));
    spice_shim_gl_scanout(NULL, fd, 16, 16, 64, DRM_FORMAT_XRGB8888, 1);
    check(fcntl(fd, F_GETFD) == -1 && errno == EBADF, "gl_scanout(NULL, fd) left fd open");
    fd = memfd_create(MEMFD_PREFIX "null2", MFD_CLOEXEC);
    int fds[2] = {fd, fd};
    uint32_t zero[2] = {0, 0};
    spice_shim_gl_scanout2(NULL, fds, 16, 16, zero, zero, 2, DRM_FORMAT_NV12, 0, 1);
    check(fcntl(fd, F_GETFD) == -1 && errno == EBADF, "gl_scanout2(NULL, fds) left fd open");

    spice_shim_free(NULL);
    check(spice_shim_last_error() == NULL, "spice_shim_free(NULL) set an error");
    uint32_t pixel = 0xff000000;
    check(spice_shim_cursor_define(NULL, 1, 1, 0, 0, &pixel) == -1,
          "spice_shim_cursor_define(NULL) accepted");
    const char *cursor_err = spice_shim_last_error();
    check(cursor_err && strstr(cursor_err, "shim is NULL"),
          "error of spice_shim_cursor_define(NULL): %s", cursor_err ? cursor_err : "(null)");
    spice_shim_mouse_set(NULL, 1, 2, 1);
    spice_shim_set_absolute_pointer(NULL, 0);
    check(spice_shim_get_port(NULL) == -1, "spice_shim_get_port(NULL) != -1");

    SpiceShim *bad = spice_shim_new("foo=1", async_complete, &lock);
    const char *err = spice_shim_last_error();
    check(bad == NULL, "unknown option accepted");
    check(err && strcmp(err, "unknown option 'foo'") == 0, "error for foo=1: %s",
          err ? err : "(null)");
    bad = spice_shim_new("port=abc", async_complete, &lock);
    err = spice_shim_last_error();
    check(bad == NULL && err && strncmp(err, "bad value for port: 'abc'", 25) == 0,
          "error for port=abc: %s", err ? err : "(null)");
    bad = spice_shim_new("port=0", NULL, NULL);
    check(bad == NULL && spice_shim_last_error() != NULL, "NULL callback accepted");
}

/* ------------------------------------------------------------------------------------------ */
/* mode "cursor"                                                                               */

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

/* One whole line on stdout, flushed (the input callbacks print from shim threads). */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say(const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&out_lock);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
}

static void say_key(void *opaque, uint32_t scancode, int down)
{
    check(opaque == (void *)&out_lock, "key callback got opaque %p", opaque);
    say("INPUT key %#x %d\n", scancode, down);
}

static void say_position(void *opaque, uint32_t x, uint32_t y, uint32_t buttons)
{
    check(opaque == (void *)&out_lock, "position callback got opaque %p", opaque);
    say("INPUT position %u %u %u\n", x, y, buttons);
}

static void say_motion(void *opaque, int32_t dx, int32_t dy, uint32_t buttons)
{
    check(opaque == (void *)&out_lock, "motion callback got opaque %p", opaque);
    say("INPUT motion %" PRId32 " %" PRId32 " %u\n", dx, dy, buttons);
}

static void say_button(void *opaque, uint32_t button, int down, uint32_t buttons)
{
    check(opaque == (void *)&out_lock, "button callback got opaque %p", opaque);
    say("INPUT button %u %d %u\n", button, down, buttons);
}

/*
 * The pointer alone, as QEMU's dpy_cursor_define / dpy_mouse_set and its tablet or mouse
 * device would use it. Prints "PORT <n>", then runs one command per stdin line and answers
 * each with one line:
 *   define W H HX HY        the shape of cursor_pixel(); "DEFINE 0" or "DEFINE -1 <error>"
 *   define-null W H HX HY   the same call with NULL pixels; "DEFINE -1 <error>" expected
 *   mouse X Y V             spice_shim_mouse_set(X, Y, V); "MOUSE X Y V"
 *   absolute N              spice_shim_set_absolute_pointer(N); "ABSOLUTE N"
 *   quit (or EOF)           spice_shim_free; "OK"
 * Input callbacks print "INPUT position X Y BUTTONS", "INPUT motion DX DY BUTTONS",
 * "INPUT button B DOWN BUTTONS" and "INPUT key SCANCODE DOWN".
 */
static int cursor_mode(const char *options)
{
    shim = spice_shim_new(options, async_complete, &lock);
    if (!shim) {
        fail("spice_shim_new(%s): %s", options, spice_shim_last_error());
    }
    SpiceShimInputCallbacks cbs = {.key = say_key,
                                   .pointer_position = say_position,
                                   .pointer_motion = say_motion,
                                   .button = say_button};
    spice_shim_set_input_callbacks(shim, &cbs, &out_lock);
    check(spice_shim_last_error() == NULL, "set_input_callbacks failed");
    int port = spice_shim_get_port(shim);
    check(port > 0, "spice_shim_get_port: %d", port);
    say("PORT %d\n", port);

    char line[256];
    while (fgets(line, sizeof(line), stdin)) {
        unsigned w, h, hx, hy;
        int x, y, v;
        if (sscanf(line, "define-null %u %u %u %u", &w, &h, &hx, &hy) == 4 ||
            sscanf(line, "define %u %u %u %u", &w, &h, &hx, &hy) == 4) {
            int r = define_cursor(w, h, hx, hy, strncmp(line, "define-null", 11) == 0);
            const char *err = spice_shim_last_error();
            check((r == 0) == (err == NULL), "define returned %d, error %s", r,
                  err ? err : "(null)");
            if (r == 0) {
                say("DEFINE 0\n");
            } else {
                say("DEFINE %d %s\n", r, err);
            }
        } else if (sscanf(line, "mouse %d %d %d", &x, &y, &v) == 3) {
            spice_shim_mouse_set(shim, x, y, v);
            check(spice_shim_last_error() == NULL, "mouse_set failed");
            say("MOUSE %d %d %d\n", x, y, v);
        } else if (sscanf(line, "absolute %d", &v) == 1) {
            spice_shim_set_absolute_pointer(shim, v);
            check(spice_shim_last_error() == NULL, "set_absolute_pointer failed");
            say("ABSOLUTE %d\n", v);
        } else if (strcmp(line, "quit\n") == 0) {
            break;
        } else {
            fail("unknown command: %s", line);
        }
    }
    spice_shim_set_input_callbacks(shim, NULL, NULL);
    spice_shim_free(shim);
    check(spice_shim_last_error() == NULL, "spice_shim_free failed");
    say("OK\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s auto|client|quick|probe|leak|cursor [OPTIONS]\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "auto") == 0) {
        mode = MODE_AUTO;
    } else if (strcmp(argv[1], "client") == 0) {
        mode = MODE_CLIENT;
    } else if (strcmp(argv[1], "quick") == 0) {
        mode = MODE_QUICK;
        period = 1.0 / 30;
        stage_s = 0.3;
        hold_s = 0.3;
        quick_limit_s = 5.0;
    } else if (strcmp(argv[1], "probe") == 0) {
        mode = MODE_PROBE;
    } else if (strcmp(argv[1], "leak") == 0) {
        mode = MODE_LEAK;
    } else if (strcmp(argv[1], "cursor") == 0) {
        mode = MODE_CURSOR;
    } else {
        fprintf(stderr, "unknown mode %s\n", argv[1]);
        return 2;
    }
    if (getenv("QEMU_LIKE_SLOW")) {
        quick_limit_s = 5.0; /* set by the tests that run it under valgrind */
    }
    main_thread = pthread_self();
    check(pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) == 0, "pipe2: %s", strerror(errno));

    char options[4096];
    snprintf(options, sizeof(options), "port=0,video-codecs=h264%s%s",
             argc == 3 && argv[2][0] ? "," : "", argc == 3 ? argv[2] : "");

    if (mode == MODE_PROBE) {
        shim = spice_shim_new(options, async_complete, &lock);
        if (!shim) {
            printf("NEW FAIL %s\n", spice_shim_last_error());
            return 1;
        }
        printf("NEW OK %d\n", spice_shim_get_port(shim));
        spice_shim_free(shim);
        return 0;
    }

    api_checks_without_server();
    if (mode == MODE_CURSOR) {
        return cursor_mode(options);
    }

    shim = spice_shim_new(options, async_complete, &lock);
    if (!shim) {
        fail("spice_shim_new(%s): %s", options, spice_shim_last_error());
    }
    int port = spice_shim_get_port(shim);
    check(port > 0, "spice_shim_get_port: %d", port);
    printf("PORT %d\n", port);
    fflush(stdout);

    if (mode == MODE_LEAK) {
        static void *volatile lost;
        draw_expect_quick("draw before any scanout");
        spice_shim_free(shim);
        lost = malloc(4242);
        lost = NULL;
        printf("LEAKED\n");
        return lost != NULL;
    }

    SpiceShimInputCallbacks cbs = {.key = on_key, .button = on_button};
    spice_shim_set_input_callbacks(shim, &cbs, NULL);
    check(spice_shim_last_error() == NULL, "set_input_callbacks failed");

    /* No scanout yet: a draw comes back at once. */
    draw_expect_quick("draw before any scanout");

    struct bufset a, a2, b, c, d, e;

    make_set(&a, KIND_SCANOUT, 1280, 720);
    cursor_stage(0);
    run(&a, hold_s, "first");

    /* Replace the scanout mid-stream: new buffers, same size; the old frames may still be
     * in the encoder and must come back anyway. */
    make_set(&a2, KIND_SCANOUT, 1280, 720);
    cursor_stage(1);
    run(&a2, stage_s, NULL);
    drain(&a, "replaced scanout");
    free_set(&a);

    make_set(&b, KIND_SCANOUT, 800, 600);
    cursor_stage(2);
    run(&b, hold_s, "small");
    drain(&a2, "before resize");
    free_set(&a2);

    make_set(&c, KIND_SCANOUT2, 1280, 720);
    cursor_stage(3);
    run(&c, stage_s, NULL);
    drain(&b, "resized scanout");
    free_set(&b);

    make_set(&d, KIND_NV12, 1280, 720);
    cursor_stage(4);
    run(&d, stage_s, NULL);

    /* A tiled modifier is refused, and the draws complete at once. */
    {
        int fds[1] = {dup(c.buf[0].fd)};
        uint32_t offsets[1] = {c.buf[0].offset};
        uint32_t strides[1] = {c.buf[0].stride};
        spice_shim_gl_scanout2(shim, fds, 1280, 720, offsets, strides, 1, DRM_FORMAT_XRGB8888,
                               I915_FORMAT_MOD_X_TILED, 1);
        const char *err = spice_shim_last_error();
        check(err && strstr(err, "not linear"), "tiled modifier not refused: %s",
              err ? err : "(null)");
        draw_expect_quick("draw after a refused scanout");
    }
    /* Disabled: by fd -1, and by an fd with width 0 (the fd is taken and closed). */
    spice_shim_gl_scanout(shim, -1, 0, 0, 0, 0, 0);
    check(spice_shim_last_error() == NULL, "disabling the scanout failed");
    draw_expect_quick("draw with the scanout disabled (fd -1)");
    spice_shim_gl_scanout(shim, dup(c.buf[1].fd), 0, 0, 0, DRM_FORMAT_XRGB8888, 1);
    draw_expect_quick("draw with the scanout disabled (width 0)");
    drain(&c, "scanout2");
    free_set(&c);
    drain(&d, "nv12");
    free_set(&d);

    make_set(&e, KIND_SCANOUT, 1280, 720);
    cursor_stage(5);
    run(&e, hold_s, "final");

    spice_shim_set_input_callbacks(shim, NULL, NULL);
    uint64_t last = next_cookie - 1;
    double t0 = now_s();
    spice_shim_free(shim);
    double free_s = now_s() - t0;
    pthread_mutex_lock(&lock);
    freed = true;
    pthread_mutex_unlock(&lock);
    process_completions();
    check(e.buf[0].busy == 0 && e.buf[1].busy == 0, "buffers still busy after spice_shim_free");
    free_set(&e);

    /* Every cookie exactly once. */
    unsigned missing = 0, twice = 0;
    uint64_t first_missing = 0, first_twice = 0;
    pthread_mutex_lock(&lock);
    for (uint64_t k = 1; k <= last; k++) {
        if (calls[k] == 0 && missing++ == 0) {
            first_missing = k;
        }
        if (calls[k] > 1 && twice++ == 0) {
            first_twice = k;
        }
    }
    for (uint64_t k = last + 1; k < MAX_COOKIES; k++) {
        check(calls[k] == 0, "cookie %" PRIu64 " was never drawn but came back", k);
    }
    check(bad_cookies == 0, "%u callbacks with an unknown cookie", bad_cookies);
    check(on_main_thread == 0, "%u callbacks ran on the main thread", on_main_thread);
    pthread_mutex_unlock(&lock);
    check(missing == 0, "%u of %" PRIu64 " cookies never came back (first: %" PRIu64 ")",
          missing, last, first_missing);
    check(twice == 0, "%u cookies came back more than once (first: %" PRIu64 ")", twice,
          first_twice);

    /* Nothing after spice_shim_free, and no memfd left open by the shim. */
    usleep(200 * 1000);
    pthread_mutex_lock(&lock);
    check(after_free == 0, "%u callbacks after spice_shim_free returned", after_free);
    pthread_mutex_unlock(&lock);
    int left = open_memfds();
    check(left == 0, "%d memfd(s) handed to the shim are still open", left);

    printf("OK cookies=%" PRIu64 " frames=%" PRIu64 " skipped=%" PRIu64
           " max_draw_call_us=%.0f free_ms=%.0f\n",
           last, frames, skipped, max_draw_call_s * 1e6, free_s * 1e3);
    close(wake_pipe[0]);
    close(wake_pipe[1]);
    return 0;
}
