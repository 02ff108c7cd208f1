/*
 * spice-shim.h: C interface of libspice_shim, a SPICE server subset that streams a host's dmabuf
 * scanouts to remote SPICE clients through GStreamer.
 *
 * SPDX-License-Identifier: MPL-2.0
 *
 * The calls mirror spice-server's spice_qxl_gl_scanout(), spice_qxl_gl_scanout2(),
 * spice_qxl_gl_draw_async() and QXLInterface.async_complete, so that porting a QEMU display
 * backend is mechanical (see "Embedding in QEMU" in the project documentation).
 *
 * The contract in one paragraph: the host hands over a scanout (the shim owns its fds from then
 * on), then announces changed rectangles with spice_shim_gl_draw_async() and a cookie. Every
 * cookie comes back exactly once through the SpiceShimAsyncComplete callback: once the encoder
 * pipelines and local clients no longer read the frame, at once when nobody watches, on errors,
 * when the scanout is replaced mid-encode, when a client disconnects, and at the latest inside
 * spice_shim_free(). After the cookie came back, the host may render into that buffer again.
 *
 * Threads: the spice_shim_* functions may be called from any thread and are serialised inside
 * the shim (QEMU makes them all from its main loop); spice_shim_free() must be the last call on
 * a SpiceShim, not concurrent with any other. Callbacks run on threads owned by the shim, never
 * from inside a spice_shim_* call.
 *
 * Errors: functions that can fail report why through spice_shim_last_error(); the message is
 * also logged (GStreamer debug category "spice-shim"; warnings and errors also on stderr).
 *
 * Build with `pkg-config --cflags --libs spice-shim` (shared library); for the static library
 * see "Embedding in QEMU" in the project documentation.
 */
#ifndef SPICE_SHIM_H
#define SPICE_SHIM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * SpiceShim:
 *
 * A running SPICE server: its listening sockets, client sessions, encoder pipelines and the
 * cookie bookkeeping. Opaque; created by spice_shim_new(), destroyed by spice_shim_free().
 */
typedef struct SpiceShim SpiceShim;

/**
 * SpiceShimAsyncComplete:
 * @opaque: the pointer given to spice_shim_new()
 * @cookie: a cookie given to spice_shim_gl_draw_async()
 *
 * Called exactly once per spice_shim_gl_draw_async() call, when the shim no longer reads the
 * frame (the equivalent of QXLInterface.async_complete with a GL_DRAW_DONE cookie).
 *
 * It is called on one dedicated shim thread ("shim-complete"), one call at a time, in no
 * particular cookie order, and never from inside a spice_shim_* call, so it may take the
 * host's own locks, except one held around spice_shim_free() (which waits for it). It should
 * only record the cookie and wake the host's main loop (QEMU: qemu_bh_schedule()). It must not
 * call spice_shim_free() (that call waits for this thread; it is refused, see
 * spice_shim_free()).
 */
typedef void (*SpiceShimAsyncComplete)(void *opaque, uint64_t cookie);

/**
 * spice_shim_new:
 * @options: comma-separated key=value list, QEMU -spice style, or NULL or "" for the defaults
 * @cb: completion callback, not NULL
 * @opaque: passed to @cb as is; the shim never dereferences it
 *
 * Starts GStreamer (once per process), checks the encoder pipelines, starts listening and
 * returns. Options (a literal ',' inside a value is written ",,"):
 *
 *   addr=HOST             TCP address to listen on (default 127.0.0.1; IPv6 literals as is)
 *   port=N                TCP port (default 5930); 0 picks a free port, see
 *                         spice_shim_get_port()
 *   unix=PATH             also listen on a unix socket (local clients get the dmabuf itself).
 *                         With unix= and neither addr= nor port=, there is no TCP listener.
 *   video-codecs=LIST     codecs in order of preference, separated by ':' or ';' (default
 *                         h264:vp8:mjpeg). Known: h264, vp8, vp9, h265, mjpeg. spice-server's
 *                         "gstreamer:h264;spice:mjpeg" syntax is accepted too (the encoder
 *                         names are ignored). Codecs whose pipeline does not work on this host
 *                         are left out (logged); if none is left, spice_shim_new() fails.
 *                         video-codec= is a synonym.
 *   pipelines=DIR         directory of pipeline files: the .pipeline files of <codec>.d in name
 *                         order, else <codec>.pipeline; the first that starts here is used.
 *                         Default: $SPICE_SHIM_PIPELINES,
 *                         else PREFIX/share/spice-shim/pipelines, PREFIX being where the library
 *                         (or, linked statically, the program) is installed, else the source
 *                         tree the library was built from, else
 *                         /usr/local/share/spice-shim/pipelines.
 *   password-file=PATH    the client password is the first line of this file
 *   password-secret=NAME  the client password is the value of environment variable NAME.
 *                         The shim has no QEMU object model: a QEMU port resolves its
 *                         "--object secret" itself and passes the value through a file
 *                         (password-file=) or the environment (password-secret=).
 *   disable-ticketing=on|off  "on": no password (any client may connect); cannot be combined
 *                         with a password. Without a password and without this option, any
 *                         client may connect too on a loopback address (a warning is logged);
 *                         on any other address spice_shim_new() then fails unless TLS
 *                         (tls-port=) or this option is given.
 *   tls-port=N            also listen for TLS on addr= (QEMU's tls-port); without port=, TLS
 *                         only. Needs x509-dir=.
 *   x509-dir=DIR          ca-cert.pem, server-cert.pem and server-key.pem, as QEMU names them
 *   tls-channels=LIST     channels that must use TLS (main, display, inputs, cursor, default;
 *                         ':'-separated or repeated). With a TLS port and no list, all of them:
 *                         a channel linked on the plain port is told to use the TLS port.
 *   plaintext-channels=LIST  channels that may stay on the plain port (same names)
 *   mm-latency=MS|auto    how long after a frame leaves the encoder clients show it (spice-gtk
 *                         shows each frame at its time stamp, so this is the display delay it
 *                         adds; MJPEG frames that arrive later are dropped). "auto" (the
 *                         default): per client, from 10 ms within 10..400 ms, raised when the
 *                         client reports late frames and lowered slowly when it does not. A
 *                         number fixes it (no adaptation).
 *   gl-draw-timeout=MS    how long a local GL client may take to answer a draw before it is
 *                         treated as gone and the cookie returns (default 1000).
 *
 * Returns: the new server, or NULL on error (unknown option, bad value, no usable codec,
 * address in use, …); spice_shim_last_error() then says why, e.g. "unknown option 'foo'" or
 * "bad value for port: 'abc'".
 */
SpiceShim *spice_shim_new(const char *options, SpiceShimAsyncComplete cb, void *opaque);

/**
 * spice_shim_last_error:
 *
 * Returns: why the last spice_shim_* call made on this thread failed, or NULL if it succeeded.
 * The string is thread-local and owned by the library; it stays valid until the next
 * spice_shim_* call on the same thread (every call except this one resets it).
 */
const char *spice_shim_last_error(void);

/**
 * spice_shim_get_port:
 * @shim: the server, or NULL
 *
 * Returns: the TCP port actually listened on (the one picked when port=0 was given), or -1 if
 * @shim is NULL or there is no TCP listener.
 */
int spice_shim_get_port(SpiceShim *shim);

/**
 * spice_shim_gl_scanout:
 * @shim: the server (if NULL, @fd is closed and nothing else happens)
 * @fd: dmabuf (or memfd) holding the picture, or -1 to disable the scanout
 * @width: width in pixels (0: scanout disabled)
 * @height: height in pixels (0: scanout disabled)
 * @stride: bytes per row
 * @fourcc: DRM fourcc (DRM_FORMAT_XRGB8888 'XR24', 'AR24', 'XB24', 'AB24', 'RG24', ...)
 * @y_0_top: non-zero if row 0 is the top of the picture; 0 if the buffer is stored bottom-up
 *
 * Replaces the current scanout: a single-plane, linear buffer at offset 0, like
 * spice_qxl_gl_scanout(). Takes ownership of @fd in every case, including errors: the shim
 * closes it once the scanout was replaced and no frame of it is in use any more. The host must
 * not close @fd itself (pass a dup() if it keeps using the buffer).
 *
 * @fd < 0, @width == 0 or @height == 0 disable the scanout: remote clients keep showing the last
 * picture, and draws complete at once until the next scanout.
 *
 * Errors (unknown fourcc, stride too small, fd smaller than stride x height, fd not open, ...)
 * are logged and reported by spice_shim_last_error(); the scanout is then disabled.
 */
void spice_shim_gl_scanout(SpiceShim *shim, int fd, uint32_t width, uint32_t height,
                           uint32_t stride, uint32_t fourcc, int y_0_top);

/**
 * spice_shim_gl_scanout2:
 * @shim: the server (if NULL, the fds are closed and nothing else happens)
 * @fds: @num_planes fds, one per plane (may be NULL if @num_planes is 0)
 * @width: width in pixels (0: scanout disabled)
 * @height: height in pixels (0: scanout disabled)
 * @offsets: @num_planes byte offsets of the planes inside their fds
 * @strides: @num_planes strides in bytes
 * @num_planes: 1 to 4 (0: scanout disabled)
 * @fourcc: DRM fourcc; multi-planar formats too (NV12 two planes, YU12 three)
 * @modifier: DRM format modifier: DRM_FORMAT_MOD_LINEAR (0) or DRM_FORMAT_MOD_INVALID
 *            (0x00ffffffffffffff, "implicit", taken as linear). Tiled or compressed layouts
 *            are refused: the pipelines read the memory with the CPU.
 * @y_0_top: non-zero if row 0 is the top of the picture
 *
 * Replaces the current scanout, like spice_qxl_gl_scanout2(). Takes ownership of every fd in
 * @fds[0 .. @num_planes) in every case, including errors (entries < 0 are skipped). If the
 * same fd number appears for several planes (planes sharing one buffer), it is owned, and
 * closed, once. The fds are closed once the scanout was replaced and no frame of it is in use.
 *
 * @num_planes == 0, @fds[0] < 0, @width == 0 or @height == 0 disable the scanout (any fds
 * given are closed).
 *
 * Errors (more than 4 planes, NULL @offsets or @strides, unknown fourcc, wrong plane count for
 * the fourcc, non-linear modifier, an fd too small, ...) are logged in one line and reported by
 * spice_shim_last_error(); the scanout is then disabled, so later draws complete at once.
 * If @fds is NULL while @num_planes > 0, nothing can be closed. With more than 4 planes no
 * array is read at all (their length is not believable), so no fd is taken either.
 * Every fd must be a dmabuf or a memfd sealed against shrinking (F_SEAL_SHRINK); anything else
 * (an unsealed memfd, a plain file, a directory, a pipe) is refused, since a buffer truncated
 * while a frame is read would crash the process with SIGBUS.
 */
void spice_shim_gl_scanout2(SpiceShim *shim, const int *fds, uint32_t width, uint32_t height,
                            const uint32_t *offsets, const uint32_t *strides,
                            uint32_t num_planes, uint32_t fourcc, uint64_t modifier,
                            int y_0_top);

/**
 * spice_shim_gl_draw_async:
 * @shim: the server (if NULL nothing happens, and the cookie never comes back)
 * @x, @y, @w, @h: the rectangle of the scanout that changed
 * @cookie: any value; handed back once through the SpiceShimAsyncComplete callback
 *
 * Announces a new frame in the current scanout, like spice_qxl_gl_draw_async(). Never blocks
 * on the network or on an encoder. The cookie comes back exactly once: when every encoder
 * pipeline and local client released the frame, or at once when there is no client, no
 * scanout, the rectangle lies outside the scanout, or the scanout was refused. Until it came
 * back, the host must not write into the scanout buffer.
 */
void spice_shim_gl_draw_async(SpiceShim *shim, uint32_t x, uint32_t y, uint32_t w, uint32_t h,
                              uint64_t cookie);

/**
 * SpiceShimInputCallbacks:
 * @key: a key was pressed (@down = 1) or released (@down = 0). @scancode is a PC XT set 1
 *       make code without the release bit 0x80: 0x01..0x7f for plain keys, 0xe0XX for
 *       extended keys (0xe0 prefix in the high byte: 0xe048 = Up arrow, 0xe01d = right Ctrl),
 *       and 0xe11d45 for Pause. QEMU's "qnum" numbering is
 *       (scancode & 0x7f) | ((scancode >> 8) == 0xe0 ? 0x80 : 0).
 *       Atomic press+release messages (KEY_SCANCODE) arrive as two calls.
 * @pointer_position: absolute position in scanout pixels (client mouse mode, tablet); the
 *       clients' display id is not passed on (there is one display).
 * @pointer_motion: relative motion (server mouse mode).
 * @button: button @button was pressed (@down = 1) or released (@down = 0). Buttons:
 *       1 left, 2 middle, 3 right, 4 wheel up, 5 wheel down, 6 side, 7 extra (SPICE numbering;
 *       the wheel arrives as press + release of 4 or 5).
 *
 * In every callback, @buttons is the button mask after the event: bit 0 (1) left, bit 1 (2)
 * middle, bit 2 (4) right, bit 3 (8) wheel up, bit 4 (16) wheel down, 5 side, 6 extra.
 * Any member may be NULL (that kind of event is dropped). The clients' lock-key state message
 * (KEY_MODIFIERS) is not forwarded.
 *
 * The callbacks run on shim threads (one per connected client's inputs channel, so two
 * clients may call concurrently), never from inside a spice_shim_* call. They should hand the
 * event to the host's main loop, or take the host's lock.
 */
typedef struct SpiceShimInputCallbacks {
    void (*key)(void *opaque, uint32_t scancode, int down);
    void (*pointer_position)(void *opaque, uint32_t x, uint32_t y, uint32_t buttons);
    void (*pointer_motion)(void *opaque, int32_t dx, int32_t dy, uint32_t buttons);
    void (*button)(void *opaque, uint32_t button, int down, uint32_t buttons);
} SpiceShimInputCallbacks;

/**
 * spice_shim_set_input_callbacks:
 * @shim: the server (NULL: nothing happens)
 * @cbs: the callbacks (copied), or NULL for none (input events are then only logged)
 * @opaque: passed to every callback
 *
 * Sets the keyboard and mouse callbacks. When this returns, no callback of the previous set
 * is running or will run any more, so its @opaque may be freed; do not hold a lock that the
 * input callbacks take while calling this. Refused (see spice_shim_last_error()) when called
 * from inside an input callback, as that wait would never end.
 */
void spice_shim_set_input_callbacks(SpiceShim *shim, const SpiceShimInputCallbacks *cbs,
                                    void *opaque);

/**
 * spice_shim_set_absolute_pointer:
 * @shim: the server (NULL: nothing happens)
 * @absolute: non-zero if the host takes absolute pointer positions (QEMU: a tablet device)
 *
 * Says whether clients may use client mouse mode (absolute positions, delivered through
 * SpiceShimInputCallbacks.pointer_position) or must use server mode (relative motion through
 * .pointer_motion; the client grabs its pointer). Connected clients are told at once. The
 * default is absolute. May be called at any time.
 */
void spice_shim_set_absolute_pointer(SpiceShim *shim, int absolute);

/**
 * spice_shim_cursor_define:
 * @shim: the server
 * @width: 1 to 512
 * @height: 1 to 512
 * @hot_x: the hot spot, inside the shape (< @width)
 * @hot_y: the hot spot, inside the shape (< @height)
 * @argb: @width * @height pixels, ARGB8888 in native byte order (0xAARRGGBB), straight
 *        (not premultiplied) alpha, rows of @width pixels without padding, as QEMU's
 *        QEMUCursor holds them
 *
 * Defines the pointer's shape, like QEMU's dpy_cursor_define(). The pixels are copied. Clients
 * get it on the cursor channel and draw it themselves, over the video; a client that connects
 * later gets the current shape at once. May be called at any time, with or without a scanout.
 *
 * Returns: 0, or -1 if the shape was refused (@shim or @argb NULL, a size of 0 or over 512, a
 * hot spot outside the shape; see spice_shim_last_error()). A refused shape changes nothing.
 */
int spice_shim_cursor_define(SpiceShim *shim, uint32_t width, uint32_t height, uint32_t hot_x,
                             uint32_t hot_y, const uint32_t *argb);

/**
 * spice_shim_mouse_set:
 * @shim: the server (NULL: nothing happens)
 * @x: where the hot spot is, in scanout pixels
 * @y: where the hot spot is, in scanout pixels
 * @visible: non-zero to show the pointer, 0 to hide it
 *
 * Moves, shows or hides the pointer, like QEMU's dpy_mouse_set(). In server mouse mode the
 * clients draw it where the host says; in client mode they follow their own pointer.
 */
void spice_shim_mouse_set(SpiceShim *shim, int32_t x, int32_t y, int visible);

/**
 * spice_shim_free:
 * @shim: the server, or NULL (no-op)
 *
 * Disconnects the clients, stops the pipelines, completes every pending cookie, waits until
 * the completion callback returned for each of them, then frees @shim and closes every fd it
 * still owned. No callback runs after this returns. The callbacks run (on their threads) while
 * this call waits, so do not hold a lock that they take. Refused, leaving @shim running (see
 * spice_shim_last_error()), when called from a completion or input callback, which this call
 * would wait for.
 */
void spice_shim_free(SpiceShim *shim);

#ifdef __cplusplus
}
#endif

#endif /* SPICE_SHIM_H */
