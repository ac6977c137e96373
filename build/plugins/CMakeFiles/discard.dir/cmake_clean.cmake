file(REMOVE_RECURSE
  "CMakeFiles/discard.dir/discard/discard.c.o"
  "CMakeFiles/discard.dir/discard/discard.c.o.d"
  "discard.pdb"
  "discard.so"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/discard.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
