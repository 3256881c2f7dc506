#!/bin/bash
awk '$2 == "ERROR"' app.log | wc -l | tr -d ' ' > error_count.txt
