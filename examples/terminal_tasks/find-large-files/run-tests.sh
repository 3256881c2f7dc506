#!/bin/bash
# Checks for find-large-files, run with the task's working directory as cwd. This task has
# no pytest files, so its exit status is its one check (non-zero when any check below
# fails). The JUnit report written to $JUNIT_XML is kept for Terminal-Bench compatibility;
# autolearn points it to /dev/null, since the programs a check script runs could write it.
passed=0
failed=0
cases=""

check() {  # check NAME COMMAND [ARGS...]
  local name=$1
  shift
  if "$@" > /dev/null 2>&1; then
    passed=$((passed + 1))
    cases+="<testcase classname=\"run-tests\" name=\"$name\"/>"
  else
    failed=$((failed + 1))
    cases+="<testcase classname=\"run-tests\" name=\"$name\"><failure message=\"check failed\"/></testcase>"
  fi
}

expected=$'a.txt\nsub/c.log\nz.dat'
data_sizes=$'100 data/b.txt\n1024 data/sub/d.log\n1500 data/sub/c.log\n2000 data/a.txt\n4096 data/z.dat'

check output_exists test -f large_files.txt
check exact_sorted_list bash -c '[ "$(cat large_files.txt)" = "$1" ]' _ "$expected"
check data_untouched bash -c \
  '[ "$(find data -type f -exec stat -c "%s %n" {} + | sort -n)" = "$1" ]' _ "$data_sizes"

printf '<testsuite name="run-tests" tests="%d" failures="%d">%s</testsuite>\n' \
  $((passed + failed)) "$failed" "$cases" > "${JUNIT_XML:-/dev/null}"
[ "$failed" -eq 0 ]
