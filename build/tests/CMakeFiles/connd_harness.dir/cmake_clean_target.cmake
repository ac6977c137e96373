file(REMOVE_RECURSE
  "libconnd_harness.a"
)
