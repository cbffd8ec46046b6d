/* An installed-library consumer: one relu forward/backward. */
#include <stdio.h>
#include <unswag.h>

int main(void) {
  unswag_op op = unswag_op_make(UNSWAG_RELU, 1);
  float x[4] = {-2, -0.5f, 0.5f, 3}, y[4], dy[4] = {1, 1, 1, 1}, dx[4];
  uint8_t code;
  if (unswag_forward(&op, UNSWAG_F32, x, y, &code, 4) != UNSWAG_OK) return 1;
  if (unswag_backward(&op, UNSWAG_F32, dy, &code, dx, 4) != UNSWAG_OK) return 1;
  int ok = code == 0xC && dx[0] == 0 && dx[3] == 1 && y[3] == 3;
  printf("consumer (unswag %s): %s\n", unswag_version_string(), ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
