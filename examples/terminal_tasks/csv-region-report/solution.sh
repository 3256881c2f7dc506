#!/bin/bash
awk -F, 'NR > 1 { sum += $3 } END { printf "%.2f\n", sum }' sales.csv > total.txt
{
  echo "region,total"
  awk -F, 'NR > 1 { t[$2] += $3 } END { for (r in t) printf "%s,%.2f\n", r, t[r] }' sales.csv | sort
} > by_region.csv
