# Hash churn in the shape of ordinary Perl code (issue 14): a hash of KEYS
# entries, each an array of a number and a string of 0..49 bytes, built,
# read back in hash order and dropped, ROUNDS times. Dropping the hash frees
# its entries in bucket order, scattered over the heap. Run as
#
#     LD_PRELOAD=LIB perl benches/pl_hash_churn.pl [ROUNDS [KEYS]]
#
# ROUNDS defaults to 2 and KEYS to 150000; prints a checksum that must not
# depend on the allocator (`aethalloc-cli ab` compares it across allocators).
use strict;
use warnings;

my $rounds = $ARGV[0] // 2;
my $keys = $ARGV[1] // 150000;
my %h;
my $sum = 0;
for my $r (1 .. $rounds) {
    for my $i (1 .. $keys) { $h{"k$i"} = [$i, "v" x ($i % 50)]; }
    for my $k (keys %h) { $sum += length($h{$k}[1]) + $h{$k}[0] % 7; }
    %h = ();
}
print "$sum\n";
