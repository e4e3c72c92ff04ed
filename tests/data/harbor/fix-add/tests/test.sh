#!/bin/bash
# Named rewards in reward.json: "reward" is the reward, the others are subscores.
cd /app
runs=0; correct=0
python3 add.py 1 1 >/dev/null 2>&1 && runs=1
[ "$(python3 add.py 2 3 2>/dev/null)" = "5" ] && [ "$(python3 add.py 10 -4 2>/dev/null)" = "6" ] && correct=1
echo "{\"reward\": $correct, \"runs\": $runs, \"correct\": $correct}" > /logs/verifier/reward.json
