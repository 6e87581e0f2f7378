# hearsay replica image.
#
# No registry is reachable where this is built, so nothing is pulled: the image
# is `scratch` plus one statically linked binary that `scripts/build-image`
# (or the command below) produces before `docker build .` runs:
#
#   RUSTFLAGS='-C target-feature=+crt-static' \
#     cargo build --release --target x86_64-unknown-linux-gnu --bin hearsay
#
# The binary is PID 1 and handles SIGTERM itself (hand off un-gossiped
# writes, leave the view, exit 0), so `docker stop` is a graceful leave.
FROM scratch

COPY target/x86_64-unknown-linux-gnu/release/hearsay /hearsay

# The assignment's containers listen on 8090; SOCKET_ADDRESS and VIEW come
# from `docker run -e ...` or docker-compose.yml.
EXPOSE 8090
STOPSIGNAL SIGTERM

# The image has no shell and no curl: the binary probes its own /health.
# `probe` reads SOCKET_ADDRESS from the environment the container was started with.
HEALTHCHECK --interval=2s --timeout=2s --start-period=5s --retries=3 \
    CMD ["/hearsay", "probe"]

ENTRYPOINT ["/hearsay"]
