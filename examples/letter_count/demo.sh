#!/bin/sh
# Serve the letter-count environment, drive one task by hand, stop the server.
# Run from the repository root with `hud` on PATH.
set -eu
cd "$(dirname "$0")"
hud serve env.py --port 0 > .url &
server=$!
trap 'kill "$server" 2>/dev/null; rm -f .url' EXIT
while [ ! -s .url ]; do sleep 0.1; done
url=$(cat .url)
hud task start count_letter --args '{"word": "strawberry", "letter": "r"}' --url "$url"
echo "agent answers: 3" >&2
hud task grade count_letter --answer 3 --url "$url"
