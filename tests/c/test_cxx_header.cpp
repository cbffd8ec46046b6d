// The public header compiles as C++ and links against the shared library.
#include <cstdio>
#include "unswag.h"

int main() {
  unswag_op op = unswag_op_make(UNSWAG_RELU, 1);
  float x[3] = {-1.0f, 0.5f, 2.0f}, y[3];
  uint8_t code = 0;
  unswag_status s = unswag_forward(&op, UNSWAG_F32, x, y, &code, 3);
  bool ok = s == UNSWAG_OK && y[0] == 0.0f && y[1] == 0.5f && code == 6;
  std::printf("test_cxx_header: %d passed, %d failed\n", ok ? 1 : 0, ok ? 0 : 1);
  return ok ? 0 : 1;
}
