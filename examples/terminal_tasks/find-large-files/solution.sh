#!/bin/bash
(cd data && find . -type f -size +1024c | sed 's|^\./||' | LC_ALL=C sort) > large_files.txt
