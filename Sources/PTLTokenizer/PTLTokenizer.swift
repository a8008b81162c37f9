// PTLTokenizer
