file(REMOVE_RECURSE
  "libconnd_core.a"
)
