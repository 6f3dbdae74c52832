"""Every bound in ChorusDB, in one place, each with its unit last in its name.

A size, queue, batch, retry or timeout that is not named here is a bug: reviewers look for
literals in the code that should have been one of these.
"""

# --- client protocol (RESP) -------------------------------------------------------------------
# Redis's own proto-max-bulk-len defaults to 512 MiB; we store values in SQLite rows and keep a
# copy in memory, so a smaller bound protects the node.
value_bytes_max = 64 * 1024 * 1024
key_bytes_max = 64 * 1024
# Largest multibulk (number of arguments in one command). Redis allows 1024*1024*1024 elements;
# 1 Mi arguments is plenty for MSET/RPUSH and bounds the parser's memory per command.
command_args_max = 1024 * 1024
# Redis's PROTO_INLINE_MAX_SIZE.
inline_command_bytes_max = 64 * 1024
# Bytes a client may have sent that do not yet form a complete command (Redis's
# client-query-buffer-limit defaults to 1 GiB; ours follows from the value bound).
query_buffer_bytes_max = value_bytes_max + 1024 * 1024
# Replies queued towards a client that does not read them; above this it is disconnected
# (Redis's client-output-buffer-limit for normal clients is unlimited; we are not).
client_output_buffer_bytes_max = 256 * 1024 * 1024
# Commands parsed from one read before the batch is handed on (keeps one batch bounded).
commands_per_batch_max = 4096
# Replies a client may have outstanding (pipelined, not yet written) before the server stops
# reading its socket; reading resumes when half of them are written.
pending_replies_max = 65_536

# --- server -----------------------------------------------------------------------------------
clients_max = 10_000
client_idle_timeout_s_default = 0          # 0 = never, as Redis's `timeout 0`
shutdown_drain_timeout_s = 10.0            # SIGTERM: time to finish acknowledged work
list_range_items_max = 1024 * 1024         # LRANGE reply elements
keys_reply_items_max = 10_000_000          # KEYS reply elements
scan_count_max = 100_000                   # SCAN COUNT bound

# --- storage ----------------------------------------------------------------------------------
group_commit_writes_max = 50_000           # writes in one SQLite transaction
storage_queue_batches_max = 10_000         # batches waiting for the storage thread
log_read_entries_max = 10_000              # entries returned by one read of the log

# --- peer protocol ----------------------------------------------------------------------------
frame_bytes_max = 128 * 1024 * 1024        # one peer frame, header excluded
frame_header_bytes = 4                     # u32 big-endian length prefix
peer_protocol_version = 2

# --- admin ------------------------------------------------------------------------------------
admin_request_timeout_s = 5.0
