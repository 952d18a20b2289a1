"""Small-object churn in the shape of ordinary Python code (issue 14): bignums,
tuples, dicts, strings and lists built and dropped, every object from the C
allocator when run as

    PYTHONMALLOC=malloc LD_PRELOAD=LIB python3 benches/py_small_objects.py [ROUNDS]

ROUNDS (default 2000) rounds; prints a checksum that must not depend on the
allocator (`aethalloc-cli ab` compares it across allocators).
"""
import sys

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
acc = 0
for i in range(rounds):
    x = 3 ** (50 + i % 200)  # bignums of 80-395 bits
    acc = (acc + x * (i + 1)) % (2 ** 521 - 1)
    d = {j: (j, str(j)) for j in range(60)}
    lst = [v[1] + "x" for v in d.values()]
    acc ^= len("".join(lst))
print(acc % 1000003)
