// PTLData
