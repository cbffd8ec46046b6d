/* Minimal test harness: CHECK counts, prints the first failures, and
 * CHECK_SUMMARY() ends main with "<name>: N passed, N failed". */
#ifndef UNSWAG_TEST_CHECK_H
#define UNSWAG_TEST_CHECK_H
#include <stdio.h>

static long check_passed, check_failed;

#define CHECK(cond, ...)                                     \
  do {                                                       \
    if (cond) {                                              \
      ++check_passed;                                        \
    } else {                                                 \
      if (++check_failed <= 20) {                            \
        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
        fprintf(stderr, __VA_ARGS__);                        \
        fprintf(stderr, "\n");                               \
      }                                                      \
    }                                                        \
  } while (0)

#define CHECK_SUMMARY(name)                                                   \
  do {                                                                        \
    printf("%s: %ld passed, %ld failed\n", name, check_passed, check_failed); \
    return check_failed ? 1 : 0;                                              \
  } while (0)

#endif
