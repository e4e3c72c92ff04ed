#!/bin/bash
# One reward: 1 if /app/hello.txt holds exactly the line asked for.
if [ "$(cat /app/hello.txt 2>/dev/null)" = "Hello, Harbor!" ]; then
  echo 1 > /logs/verifier/reward.txt
else
  echo 0 > /logs/verifier/reward.txt
fi
