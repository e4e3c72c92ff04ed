#!/bin/bash
if [ "$(tr -d '[:space:]' < /tmp/lines.txt 2>/dev/null)" = "$(wc -l < /etc/passwd)" ]; then
  echo 1 > /logs/verifier/reward.txt
else
  echo 0 > /logs/verifier/reward.txt
fi
