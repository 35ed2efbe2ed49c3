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
