#!/bin/bash
for path in inbox/*; do
  name=$(basename "$path")
  if [[ "$name" == *.* ]]; then
    ext="${name##*.}"
  else
    ext="noext"
  fi
  mkdir -p "sorted/$ext"
  mv "$path" "sorted/$ext/$name"
done
