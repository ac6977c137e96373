# CMake generated Testfile for 
# Source directory: /work/main/tests
# Build directory: /work/main/build/tests
# 
# This file includes the relevant testing commands required for 
# testing this directory and lists subdirectories to be tested as well.
add_test(test_config "/work/main/build/tests/test_config")
set_tests_properties(test_config PROPERTIES  ENVIRONMENT "CK_DEFAULT_TIMEOUT=120" TIMEOUT "300" _BACKTRACE_TRIPLES "/work/main/tests/CMakeLists.txt;18;add_test;/work/main/tests/CMakeLists.txt;26;connd_test;/work/main/tests/CMakeLists.txt;0;")
subdirs("plugins")
