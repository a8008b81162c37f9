import CPTLKernels

/// CRC-32C (Castagnoli, polynomial 0x82F63B78, reflected), the checksum of every tensor frame
/// and checkpoint file: the SSE4.2 instruction when the CPU has it (GB/s), slicing-by-8 otherwise.
public enum CRC32C {
    /// The checksum of `bytes` (continuing from `crc` for a split buffer).
    public static func checksum(_ bytes: UnsafeRawBufferPointer, crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        return ptl_crc32c(crc, base, bytes.count)
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { checksum($0) } }
}
