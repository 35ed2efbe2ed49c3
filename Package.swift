// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "tcptrail",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "tcptrail", targets: ["tcptrail"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.1.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.60.0"),
        // `serve`'s /metrics in the Prometheus text exposition format.
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // Microbenchmarks with allocation counts (Benchmarks/, `swift package benchmark`).
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.0", traits: ["MallocInterposer"]),
    ],
    targets: [
        // The kernel-to-user event layout, shared with bpf/tcptrail.bpf.c.
        .target(name: "CTCPTrailEvent"),
        // libbpf, from Debian's libbpf-dev.
        .systemLibrary(
            name: "CLibBPF",
            pkgConfig: "libbpf",
            providers: [.apt(["libbpf-dev", "libelf-dev", "zlib1g-dev"])]
        ),
        // zlib, for reading .gz logs (libbpf links it too).
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // ncurses for `tcptrail top`, from Debian's libncurses-dev.
        .systemLibrary(name: "CNCurses", providers: [.apt(["libncurses-dev"])]),
        // Signal and process helpers that need C (async-signal-safe flags, prctl, setns).
        .target(name: "CTCPTrailSys"),
        // The pure core: events, decoding, the handshake engine, view models,
        // formatting. No syscalls, no file or socket I/O; tested without privileges.
        .target(
            name: "TCPTrailCore",
            dependencies: ["CTCPTrailEvent", .product(name: "Histogram", package: "hdrhistogram-swift")]
        ),
        // The host's state: netlink sock_diag, /proc, setns and namespace handles,
        // clocks, writes to file descriptors.
        .target(name: "TCPTrailHost", dependencies: ["TCPTrailCore", "CTCPTrailSys"]),
        // The v1 event log: its schema, the writer, its writer thread and rotation,
        // the readers (plain, .gz, stdin), both parsers and the replay driver.
        .target(name: "TCPTrailLog", dependencies: ["TCPTrailCore", "TCPTrailHost", "CTCPTrailEvent", "CTCPTrailSys", "CZlib"]),
        // Compiles bpf/*.bpf.c at build time and embeds the object as Swift source.
        .executableTarget(name: "bpf-embed"),
        .plugin(
            name: "BPFObjectPlugin",
            capability: .buildTool(),
            dependencies: ["bpf-embed"]
        ),
        // The thin layer around libbpf: open, configure, load, attach, ring buffer.
        .target(
            name: "TCPTrailLoader",
            dependencies: ["CLibBPF", "CTCPTrailEvent", "TCPTrailCore", "TCPTrailHost"],
            plugins: ["BPFObjectPlugin"]
        ),
        // The live tracer: the session around the loader, loss reporting, the pipeline into the sinks.
        .target(
            name: "TCPTrailLive",
            dependencies: ["TCPTrailCore", "TCPTrailHost", "TCPTrailLog", "TCPTrailLoader", "CTCPTrailSys"]
        ),
        // The command line: argument parsing and wiring; `top` (ncurses) and `serve` (HTTP).
        .executableTarget(
            name: "tcptrail",
            dependencies: [
                "TCPTrailCore", "TCPTrailHost", "TCPTrailLog", "TCPTrailLive", "TCPTrailLoader", "CTCPTrailSys", "CNCurses",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            // The timeline page: served by `serve`, written by `replay --html`.
            resources: [.embedInCode("Web/timeline.html")]
        ),
        // Test peer: a TCP client or server with a chosen process name.
        .executableTarget(name: "tt-peer", dependencies: ["CTCPTrailSys"]),
        // libFuzzer target over replay (scripts/fuzz-replay); built plainly, it reruns saved inputs.
        .executableTarget(name: "tcptrail-fuzz", dependencies: ["TCPTrailCore", "TCPTrailLog"]),
        .testTarget(
            name: "TCPTrailCoreTests",
            dependencies: ["TCPTrailCore", "TCPTrailLog", "CTCPTrailEvent", .product(name: "PropertyBased", package: "swift-property-based")]
        ),
        // The loader's pure parts: which program variants a kernel's BTF facts choose.
        .testTarget(name: "TCPTrailLoaderTests", dependencies: ["TCPTrailLoader"]),
        // The host and log modules' I/O against files and namespaces the tests make (no root needed).
        .testTarget(name: "TCPTrailHostTests", dependencies: ["TCPTrailHost", "TCPTrailLog", "TCPTrailCore"]),
        .testTarget(
            name: "TCPTrailSystemTests",
            dependencies: ["TCPTrailCore", "TCPTrailHost", "TCPTrailLog", "tcptrail", "tt-peer"]
        ),
        .executableTarget(
            name: "TCPTrailMicro",
            dependencies: ["TCPTrailCore", "TCPTrailLog", "CTCPTrailEvent", .product(name: "Benchmark", package: "benchmark")],
            path: "Benchmarks/TCPTrailMicro",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
