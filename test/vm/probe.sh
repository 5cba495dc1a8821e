#!/bin/sh
# Runs inside a governed agent: tries each operation given as NAME:OP:PATH and
# prints "CASE NAME ok" or "CASE NAME denied <error>". OP is read, write or list.
echo "PID $$"
for c in "$@"; do
  name=${c%%:*}; rest=${c#*:}; op=${rest%%:*}; path=${rest#*:}
  case $op in
    read)  out=$(cat "$path" 2>&1 >/dev/null) ;;
    write) out=$( (echo written > "$path") 2>&1 ) ;;
    list)  out=$(ls "$path" 2>&1 >/dev/null) ;;
    *)     echo "CASE $name bad-op"; continue ;;
  esac
  if [ $? -eq 0 ]; then echo "CASE $name ok"; else echo "CASE $name denied $out"; fi
done
