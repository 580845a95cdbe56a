/*
 * tokenbot broker plugin ABI, version 1.3.
 *
 * The C view of broker-api/src/abi.rs; a test compiles this header and compares every size,
 * offset and constant with the Rust definitions, so the two cannot drift apart.
 *
 * Rules:
 *  - Export one symbol, TOKENBOT_ENTRY_SYMBOL, of type tokenbot_entry_fn. It receives the host
 *    table (valid for the life of the process) and returns the plugin table (which must stay valid
 *    for the life of the process; libraries are never unloaded), or NULL to refuse the host.
 *  - Tables start with a header and only ever grow at the end. Readers check struct_size before
 *    reading a field added after ABI 1.0.
 *  - Data crosses as borrowed bytes (valid for the call) holding versioned JSON; outputs are
 *    written into the caller's sink, so memory is never freed on the other side.
 *  - Plugin functions may be called from any thread, and concurrently for different accounts.
 *  - Minor versions: 1.1 added sleep_ms and the settings map; 1.2 added JSON fields only (extra
 *    credential fields, served token extras, the validity rule, a minimum login interval), so
 *    the tables are those of 1.1; 1.3 added JSON fields only (a pending_approval error class with
 *    pending_until_ms, a manifest's token_webhook flag, an assisted finish's webhook delivery),
 *    so the tables are still those of 1.1.
 *  - Never let a C++ exception or a Rust panic cross the boundary: return TOKENBOT_STATUS_PANIC.
 */
#ifndef TOKENBOT_BROKER_H
#define TOKENBOT_BROKER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TOKENBOT_ENTRY_SYMBOL "tokenbot_broker_v1"
#define TOKENBOT_HOST_MAGIC 0x48424B54u   /* "TKBH" little-endian */
#define TOKENBOT_PLUGIN_MAGIC 0x50424B54u /* "TKBP" little-endian */
#define TOKENBOT_ABI_MAJOR 1
#define TOKENBOT_ABI_MINOR 3

typedef int32_t tokenbot_status;
#define TOKENBOT_STATUS_OK 0
#define TOKENBOT_STATUS_ERROR 1       /* sink holds an error JSON */
#define TOKENBOT_STATUS_PANIC 2
#define TOKENBOT_STATUS_BAD_INPUT 3
#define TOKENBOT_STATUS_UNSUPPORTED 4
#define TOKENBOT_STATUS_DENIED 5
#define TOKENBOT_STATUS_TOO_LARGE 6
#define TOKENBOT_STATUS_TIMEOUT 7

#define TOKENBOT_LOG_ERROR 1
#define TOKENBOT_LOG_WARN 2
#define TOKENBOT_LOG_INFO 3
#define TOKENBOT_LOG_DEBUG 4
#define TOKENBOT_LOG_TRACE 5

typedef struct tokenbot_header {
    uint32_t magic;
    uint32_t struct_size;
    uint16_t abi_major;
    uint16_t abi_minor;
} tokenbot_header;

typedef struct tokenbot_bytes {
    const uint8_t *ptr;
    size_t len;
} tokenbot_bytes;

typedef void (*tokenbot_sink_write_fn)(void *ctx, tokenbot_bytes data);

typedef struct tokenbot_sink {
    void *ctx;
    tokenbot_sink_write_fn write;
} tokenbot_sink;

/* Opaque per-call context: pass it back to every host callback made during the call. */
typedef struct tokenbot_call tokenbot_call;

typedef tokenbot_status (*tokenbot_http_fn)(tokenbot_call *call, tokenbot_bytes request, tokenbot_sink out);
typedef void (*tokenbot_log_fn)(tokenbot_call *call, int32_t level, tokenbot_bytes message);
typedef int64_t (*tokenbot_now_fn)(tokenbot_call *call);
typedef tokenbot_status (*tokenbot_totp_fn)(tokenbot_call *call, tokenbot_bytes request, tokenbot_sink out);
/* ABI 1.1: sleep on the host's clock; TOKENBOT_STATUS_TIMEOUT at once if the call's deadline would
 * pass first. */
typedef tokenbot_status (*tokenbot_sleep_fn)(tokenbot_call *call, uint64_t ms);

typedef struct tokenbot_host_table {
    tokenbot_header header; /* magic == TOKENBOT_HOST_MAGIC */
    tokenbot_http_fn http;
    tokenbot_log_fn log;
    tokenbot_now_fn now_unix_ms;
    tokenbot_totp_fn totp;   /* ABI 1.0 ends here: TOKENBOT_HOST_TABLE_MIN_SIZE */
    tokenbot_sleep_fn sleep_ms; /* ABI 1.1: read only if header.struct_size covers it */
} tokenbot_host_table;

#define TOKENBOT_HOST_TABLE_MIN_SIZE (offsetof(tokenbot_host_table, sleep_ms))

typedef tokenbot_status (*tokenbot_plugin_fn)(const tokenbot_host_table *host, tokenbot_call *call,
                                              tokenbot_bytes input, tokenbot_sink out);

typedef struct tokenbot_plugin_table {
    tokenbot_header header; /* magic == TOKENBOT_PLUGIN_MAGIC */
    tokenbot_bytes id;
    tokenbot_bytes version;
    tokenbot_bytes manifest;             /* JSON */
    tokenbot_plugin_fn login;            /* required; the minimum table ends here */
    tokenbot_plugin_fn verify;           /* optional (NULL) */
    tokenbot_plugin_fn assisted_url;     /* optional (NULL) */
    tokenbot_plugin_fn assisted_finish;  /* optional (NULL) */
} tokenbot_plugin_table;

#define TOKENBOT_PLUGIN_TABLE_MIN_SIZE \
    (offsetof(tokenbot_plugin_table, login) + sizeof(tokenbot_plugin_fn))

typedef const tokenbot_plugin_table *(*tokenbot_entry_fn)(const tokenbot_host_table *host);

#ifdef __cplusplus
}
#endif

#endif /* TOKENBOT_BROKER_H */
