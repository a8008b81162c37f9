// PTLFormats
