// Reference PDQ (ThreatExchange C++): reads rows cols then RGB uint8 rows*cols*3 from stdin (binary),
// prints the 256 bits in index order k = i*16+j, the hex format, and the quality.
#include <pdq/cpp/hashing/pdqhashing.h>
#include <cstdio>
#include <vector>
using namespace facebook::pdq::hashing;
int main() {
  int dims[2];
  while (fread(dims, sizeof(int), 2, stdin) == 2) {
    int r = dims[0], c = dims[1];
    std::vector<uint8_t> rgb((size_t)r * c * 3);
    if (fread(rgb.data(), 1, rgb.size(), stdin) != rgb.size()) return 1;
    std::vector<float> b1((size_t)r * c), b2((size_t)r * c);
    fillFloatLumaFromRGB(&rgb[0], &rgb[1], &rgb[2], r, c, c * 3, 3, b1.data());
    static float a[64][64], t[16][64], s[16][16];
    Hash256 h; int q = 0;
    pdqHash256FromFloatLuma(b1.data(), b2.data(), r, c, a, t, s, h, q);
    for (int k = 0; k < 256; k++) putchar('0' + ((h.w[k >> 4] >> (k & 15)) & 1));
    printf(" %s %d\n", h.format().c_str(), q);
  }
  return 0;
}
