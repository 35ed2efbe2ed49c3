import CLibBPF
import Foundation

/// Receives each ring-buffer record; returning false stops the current drain.
public protocol RingBufferConsumer: AnyObject {
    func consume(_ record: UnsafeRawBufferPointer) -> Bool
}

/// Reads the BPF ring buffer through libbpf, record by record, in place
/// (no copy out of the mapped ring).
public final class RingBufferReader {
    private var ring: OpaquePointer?
    private let consumer: Unmanaged<ConsumerBox>

    private final class ConsumerBox {
        let sink: any RingBufferConsumer
        init(_ sink: any RingBufferConsumer) { self.sink = sink }
    }

    public init(mapFD: Int32, consumer: any RingBufferConsumer) throws(LoaderError) {
        let box = Unmanaged.passRetained(ConsumerBox(consumer))
        self.consumer = box
        let callback: ring_buffer_sample_fn = { ctx, data, size in
            guard let ctx, let data else { return 0 }
            let box = Unmanaged<ConsumerBox>.fromOpaque(ctx).takeUnretainedValue()
            return box.sink.consume(UnsafeRawBufferPointer(start: data, count: size)) ? 0 : 1
        }
        guard let rb = ring_buffer__new(mapFD, callback, box.toOpaque(), nil) else {
            let err = errno
            box.release()
            throw .ringBufferFailed(errno: err)
        }
        ring = rb
    }

    deinit {
        if let ring { ring_buffer__free(ring) }
        consumer.release()
    }

    /// Waits up to `timeoutMilliseconds` for a wake-up, then drains what is queued.
    /// Returns the number of records consumed, or a negative errno (-EINTR on a signal).
    @discardableResult
    public func poll(timeoutMilliseconds: Int32) -> Int32 {
        let rc = ring_buffer__poll(ring, timeoutMilliseconds)
        if rc < 0 { return rc }
        // Producers submit without waking us, so drain even when poll saw nothing.
        let more = ring_buffer__consume(ring)
        return more < 0 ? more : rc + more
    }

    /// Drains everything queued now, without waiting.
    @discardableResult
    public func drain() -> Int32 { ring_buffer__consume(ring) }
}

/// How full the ring buffer is: the producer's position less the consumer's,
/// read from the map's two position pages (mapped read-only, apart from
/// libbpf's mapping; this libbpf has no ring__avail_data_size).
public final class RingBufferFill {
    private let consumerPage: UnsafeMutableRawPointer
    private let producerPage: UnsafeMutableRawPointer
    private let pageSize: Int
    /// The ring's data size in bytes.
    public let capacity: UInt64

    /// Nil when the pages cannot be mapped (the gauge is then left out).
    public init?(mapFD: Int32, capacity: UInt64) {
        pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard let c = mmap(nil, pageSize, PROT_READ, MAP_SHARED, mapFD, 0), c != MAP_FAILED else { return nil }
        guard let p = mmap(nil, pageSize, PROT_READ, MAP_SHARED, mapFD, off_t(pageSize)), p != MAP_FAILED else {
            munmap(c, pageSize)
            return nil
        }
        consumerPage = c
        producerPage = p
        self.capacity = capacity
    }

    /// Bytes written and not yet read, record headers included.
    public var used: UInt64 {
        // Each position is one aligned 8-byte word the kernel stores whole.
        let consumer = consumerPage.load(as: UInt64.self)
        let producer = producerPage.load(as: UInt64.self)
        return producer >= consumer ? min(producer - consumer, capacity) : 0
    }

    deinit {
        munmap(consumerPage, pageSize)
        munmap(producerPage, pageSize)
    }
}
