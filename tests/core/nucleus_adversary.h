// AdversarialRanks(): an order of weights that makes a median-of-three quickselect (the partition rounds of
// core/sampler_chain.h's SelectNucleus) keep all but a few entries in every round. Shared by the test that pins
// SelectNucleus's bound and the benchmark that measures it.
//
//   std::vector<int64_t> rank = AdversarialRanks(20000);   // rank[id], 0 = the best
//   std::vector<WeightedToken> tokens = TokensByRank(rank);
#ifndef SAMPLERD_TESTS_CORE_NUCLEUS_ADVERSARY_H_
#define SAMPLERD_TESTS_CORE_NUCLEUS_ADVERSARY_H_

#include <cmath>
#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

#include "core/sampler_chain.h"

namespace samplerd {

// McIlroy's adversary ("A Killer Adversary for Quicksort", 1999) for SelectNucleus's partition rounds (median of
// three moved to the end, Lomuto partition, larger weight first): ranks handed out lazily while a copy of the rounds
// runs, always into the larger side, so that each round keeps all but a few entries. Rank 0 is the best.
inline std::vector<int64_t> AdversarialRanks(int64_t n) {
  const int64_t gas = n;
  std::vector<int64_t> rank(static_cast<size_t>(n), gas);
  int64_t solid = 0, candidate = -1;
  // "x ranks before y", fixing ranks only when the answer needs them.
  const auto before = [&](int64_t x, int64_t y) {
    int64_t& rx = rank[static_cast<size_t>(x)];
    int64_t& ry = rank[static_cast<size_t>(y)];
    if (rx == gas && ry == gas) (x == candidate ? rx : ry) = solid++;
    if (rx == gas) {
      candidate = x;
    } else if (ry == gas) {
      candidate = y;
    }
    return rx < ry;
  };
  std::vector<int64_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), 0);
  int64_t lo = 0, hi = n;
  while (hi - lo > 32) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (before(t[mid], t[lo])) std::swap(t[mid], t[lo]);
    if (before(t[hi - 1], t[lo])) std::swap(t[hi - 1], t[lo]);
    if (before(t[mid], t[hi - 1])) std::swap(t[mid], t[hi - 1]);
    const int64_t pivot = t[hi - 1];
    int64_t store = lo;
    for (int64_t i = lo; i < hi - 1; ++i) {
      if (before(t[i], pivot)) std::swap(t[i], t[store++]);
    }
    std::swap(t[store], t[hi - 1]);
    if (store - lo > hi - store - 1) {
      hi = store;
    } else {
      lo = store + 1;
    }
  }
  for (int64_t& r : rank) {
    if (r == gas) r = solid++;
  }
  return rank;
}

// Near-uniform weights in the order of `rank` (token id = index): weight exp(-rank / n), in (1/e, 1].
inline std::vector<WeightedToken> TokensByRank(const std::vector<int64_t>& rank) {
  const float n = static_cast<float>(rank.size());
  std::vector<WeightedToken> tokens(rank.size());
  for (size_t id = 0; id < rank.size(); ++id) {
    tokens[id] = {std::exp(-static_cast<float>(rank[id]) / n), static_cast<int32_t>(id)};
  }
  return tokens;
}

}  // namespace samplerd

#endif  // SAMPLERD_TESTS_CORE_NUCLEUS_ADVERSARY_H_
