# evs_module(NAME SOURCES ... DEPS ...): a static library evs_<NAME>.
function(evs_module name)
  cmake_parse_arguments(M "" "" "SOURCES;DEPS" ${ARGN})
  if(M_SOURCES)
    add_library(evs_${name} STATIC ${M_SOURCES})
    target_link_libraries(evs_${name} PUBLIC ${M_DEPS})
  else()
    add_library(evs_${name} INTERFACE)
    target_link_libraries(evs_${name} INTERFACE ${M_DEPS})
  endif()
endfunction()

# evs_test(NAME SOURCES ... LIBS ... [LABELS ...] [TIMEOUT s]): one GoogleTest
# binary; each TEST becomes a CTest test. Labels: unit (default), root (needs
# root and kernel features; skips itself otherwise), slow, integration,
# hostile (malformed input; the `hostile_tests` target builds these, for the
# sanitizer build in scripts/test.sh).
function(evs_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  if(NOT T_LABELS)
    set(T_LABELS unit)
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 600)
  endif()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} evs_test_support GTest::gtest GTest::gtest_main GTest::gmock)
  if("hostile" IN_LIST T_LABELS)
    set_property(GLOBAL APPEND PROPERTY EVS_HOSTILE_TESTS ${name})
  endif()
  gtest_discover_tests(${name}
    PROPERTIES TIMEOUT ${T_TIMEOUT}
    DISCOVERY_TIMEOUT 60)
  # gtest_discover_tests flattens its PROPERTIES into one list, so a test
  # would keep only the first of several labels. Set them from a script that
  # ctest runs after the discovered tests are defined (<name>_TESTS lists
  # them).
  set(label_script "${CMAKE_CURRENT_BINARY_DIR}/${name}_labels.cmake")
  file(WRITE "${label_script}"
    "if(DEFINED ${name}_TESTS)\n"
    "  set_tests_properties(\${${name}_TESTS} PROPERTIES LABELS \"${T_LABELS}\")\n"
    "endif()\n")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${label_script}")
endfunction()
