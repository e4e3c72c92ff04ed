#!/bin/bash
wc -l < /etc/passwd > /tmp/lines.txt
