#!/bin/sh
# The demo image's entry point: prints a greeting and the architecture it was built for.
echo "hello from the Rin demo on $(cat /etc/rin-arch)"
exec sleep infinity
