set pagination off
set confirm off
set non-stop on
attach 1713
show non-stop
continue -a &
echo STALL-READY\n
info threads
