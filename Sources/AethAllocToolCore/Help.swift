/// The help texts.
public enum Help {
    public static let general = """
        aethalloc-cli: run, compare and watch programs under AethAlloc and other allocators,
        and install AethAlloc

        Usage:
          aethalloc-cli run [--variant VARIANT] -- CMD ARGS...
          aethalloc-cli ab [--with LIST] [--runs N] [--json] -- CMD ARGS...
          aethalloc-cli bench [--quick] [--only NAMES] [--with LIST] [--runs N]
                              [--threads LIST] [--out DIR] [--report-only DIR]
          aethalloc-cli stat [PID] [--once] [--json] [--interval SEC] [--dir DIR]
          aethalloc-cli metrics [--listen HOST:PORT] [--dir DIR]
          aethalloc-cli install [--prefix DIR] [--from DIR] [--dry-run] [--force]
          aethalloc-cli help [COMMAND]

        Commands:
          run      run a program with an AethAlloc variant preloaded
          ab       A/B compare one program across allocators (time, CPU, peak RSS)
          bench    build and run the C benchmark suite, write results and a report
          stat     live allocator statistics of running programs, like top
          metrics  serve those statistics to Prometheus over HTTP
          install  install the libraries, header, pkg-config file and this
                   command (as 'aethalloc') under a prefix

        Allocators: glibc (nothing preloaded); the peers jemalloc, mimalloc,
        tcmalloc, from Debian packages:
          \(Catalog.installHint)
        and the AethAlloc variants magazine, simple, metrics, hardened, built by:
          \(Catalog.buildHint)

        Variant libraries (libaethalloc.so for magazine, libaethalloc-VARIANT.so
        otherwise) are looked up in $AETHALLOC_LIB_DIR, then next to this
        executable, then in ../lib beside its bin directory (an installed
        copy), then in <package>/.build/release.

        Run 'aethalloc-cli COMMAND --help' for a command's options.

        """

    public static let run = """
        Usage: aethalloc-cli run [--variant VARIANT] [--] CMD ARGS...

        Runs CMD with LD_PRELOAD set to the variant's library and exits with
        CMD's exit status (128+N if it is killed by signal N, with a note on
        stderr). An existing LD_PRELOAD is replaced.

        Options:
          --variant VARIANT   magazine (default), simple, metrics or hardened
          -h, --help          this help

        Example:
          aethalloc-cli run --variant hardened -- python3 -c 'print(1)'

        """

    public static let ab = """
        Usage: aethalloc-cli ab [options] [--] CMD ARGS...

        Runs CMD under each allocator, interleaved (A B C A B C ...) so that
        drift hits all of them alike, and checks that every run exits with the
        same status and prints the same stdout. Prints the median wall time,
        CPU time (user+sys of the child) and peak RSS (ru_maxrss of the child),
        each with min-max over the runs and the ratio to the first allocator.
        Runs are started through a tiny C launcher (built with cc on the fly)
        so that peak RSS is the command's own, not inherited from this tool.

        Options:
          --with LIST       comma-separated allocators, first is the baseline
                            (default: glibc,jemalloc,mimalloc,tcmalloc, then
                            every built variant; missing peers are skipped).
                            An entry with a '/' is a library path to preload.
                            NAME[VAR=VALUE ...] runs NAME with those variables
                            set (space-separated; commas inside brackets do
                            not split the list), e.g.
                            'magazine,magazine[AETHALLOC_BACKGROUND=0]'.
          --runs N          measured runs per allocator (default 5)
          --warmup N        unmeasured rounds first (default 1)
          --json            print the results as JSON on stdout
          --ignore-stdout   do not compare stdout across allocators
          --timeout SEC     kill a run after SEC seconds (default: none)
          -h, --help        this help

        Exit status: 0 if all runs agree, 1 on a mismatch or a crash, 2 on bad
        usage, 127 if CMD does not exist.

        Example:
          aethalloc-cli ab --runs 3 -- python3 -c 'x=[str(i) for i in range(10**6)]'

        """

    public static let bench = """
        Usage: aethalloc-cli bench [options]

        Builds <package>/benches/*.c with 'cc -O2 -pthread -o BIN FILE -lm'
        (into <package>/.build/benches) and runs each under every allocator,
        interleaved, with progress on stderr. Each bench takes key=value args
        (quick=1, threads=N) and prints one JSON line:
          {"bench":NAME,"params":{...},"metrics":{"ops_per_sec":...,...}}
        The primary metric is ops_per_sec (higher is better), else seconds
        (lower is better). Benches declaring a `threads` parameter run at each
        thread count (thread_churn gets concurrent=N; producer_consumer gets
        N/2 producers and N-N/2 consumers, at least one of each, so it skips
        a count that would repeat another's scenario). Peak RSS is the bench
        process's ru_maxrss.

        Writes DIR/results.json (every run and the medians), DIR/report.md
        (method, machine, one table per scenario, a summary of geometric
        means) and one SVG bar chart per bench.

        Options:
          --quick            short runs (quick=1), threads 2 only
          --only NAMES       comma-separated bench names
          --with LIST        allocators, as for 'ab' (default: all available)
          --runs N           runs per allocator and scenario (default 3)
          --threads LIST     thread counts (default 1,2,4,8; --quick: 2)
          --out DIR          results folder (default <package>/results/<UTC time>)
          --report-only DIR  rewrite DIR/report.md and the SVGs from DIR/results.json
          --benches DIR      take the bench sources from DIR instead
          --timeout SEC      kill a run after SEC seconds (default 600, 0: never)
          -h, --help         this help

        """

    public static let stat = """
        Usage: aethalloc-cli stat [PID] [options]

        Shows the allocator statistics that programs running under
        libaethalloc-metrics.so publish, one row per process (or only PID),
        redrawn every interval until Ctrl-C:

          pid, command, variant   who publishes
          allocs/s, frees/s       rates between the last two snapshots
          in use, peak            bytes handed out and not freed, and their peak
          mapped, returned        bytes ever mapped from and given back to the OS
          cache hits              small allocations served by the thread cache

        A program publishes when it runs with libaethalloc-metrics.so preloaded
        (e.g. 'aethalloc-cli run --variant metrics -- CMD') and either
        $AETHALLOC_STATS_DIR is set or /dev/shm is writable. Files of processes
        that are gone are removed; unreadable files are reported on stderr.

        Options:
          --once            print one table and exit: two snapshots --interval
                            apart (default 1 s; 0: one snapshot, no rates)
          --json            like --once, as one JSON document: the raw counters
                            (C field names), rates and errors of each process
          --interval SEC    seconds between redraws, or between the two
                            snapshots of --once (default 1)
          --dir DIR         where the statistics files are (default
                            $AETHALLOC_STATS_DIR, else /dev/shm)
          -h, --help        this help

        Exit status: 0; 1 if a file could not be read or PID publishes nothing;
        2 on bad usage.

        Example:
          aethalloc-cli stat --once

        """

    public static let metrics = """
        Usage: aethalloc-cli metrics [--listen HOST:PORT] [--dir DIR]

        Serves the statistics of every process publishing in DIR (see 'stat')
        over HTTP in the Prometheus text format (version 0.0.4) on GET
        /metrics, read afresh at each scrape. Each process's series carry the
        labels pid, command and variant:

          counters  aethalloc_allocs_total, aethalloc_frees_total,
                    aethalloc_cache_hits_total, aethalloc_cache_misses_total,
                    aethalloc_direct_allocs_total, aethalloc_mapped_bytes_total,
                    aethalloc_returned_bytes_total,
                    aethalloc_depot_transfers_total,
                    aethalloc_threads_exited_total
          gauges    aethalloc_bytes_in_use, aethalloc_peak_bytes_in_use

        and the exporter adds aethalloc_processes and
        aethalloc_exporter_errors_total{kind="directory"|"file"|"request"}.
        Unreadable files are skipped (one line on stderr, and counted); bad
        requests get 400. Stops on Ctrl-C or SIGTERM.

        Options:
          --listen HOST:PORT  address to listen on (default 127.0.0.1:9091;
                              ':PORT' means 127.0.0.1, '[::1]:PORT' for IPv6,
                              port 0 picks a free one)
          --dir DIR           where the statistics files are (default
                              $AETHALLOC_STATS_DIR, else /dev/shm)
          -h, --help          this help

        Exit status: 0 when stopped by a signal; 1 if the address cannot be
        listened on (e.g. the port is in use); 2 on bad usage.

        Example:
          aethalloc-cli metrics --listen :9091 &
          curl -s http://127.0.0.1:9091/metrics

        """

    public static let install = """
        Usage: aethalloc-cli install [--prefix DIR] [--from DIR] [--dry-run] [--force]

        Installs this build under DIR (default \(InstallOptions.defaultPrefix)):

          DIR/lib/libaethalloc.so, libaethalloc-simple.so,
            libaethalloc-metrics.so, libaethalloc-hardened.so   mode 0644
          DIR/include/aethalloc.h                               mode 0644
          DIR/lib/pkgconfig/aethalloc.pc                        mode 0644
          DIR/bin/aethalloc        this command, as users type it, mode 0755
          DIR/share/aethalloc/install-manifest   each file installed, with
                                   its FNV-1a 64 checksum

        The libraries and the command (aethalloc-cli) come from the directory
        of this executable, the build directory (e.g. .build/release), or
        from --from DIR; the header from <package>/include/aethalloc.h.
        Libraries are 0644 as on Debian: the loader only reads them.

        Each file is written to a temporary file in its directory and renamed
        into place, so a program starting meanwhile loads the old library or
        the new one, never part of one. An existing file is replaced only if
        the manifest lists it with the checksum of what is on disk now (ours,
        not edited since); any other file stops the install before anything
        is written, unless --force. Installing the same build again changes
        nothing. Each action is printed on one line: mkdir, install, update,
        skip (unchanged), replace (--force). Then prints how to preload the
        library into one systemd service or system-wide.

        Options:
          --prefix DIR   where to install (default \(InstallOptions.defaultPrefix)); an
                         absolute path without spaces or ':'
          --from DIR     take the libraries and aethalloc-cli from DIR
          --dry-run      list what would be done; write nothing
          --force        replace files this command did not install, or that
                         were changed since
          -h, --help     this help

        Exit status: 0 on success, also when nothing changed; 1 if a file is
        missing, a destination is refused or writing fails; 2 on bad usage.

        Example:
          swift build -c release && sudo .build/release/aethalloc-cli install

        """

    public static func text(for topic: String?) -> String {
        switch topic {
        case "run": return run
        case "ab": return ab
        case "bench": return bench
        case "stat": return stat
        case "metrics": return metrics
        case "install": return install
        default: return general
        }
    }
}
