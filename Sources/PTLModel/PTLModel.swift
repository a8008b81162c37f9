// PTLModel
