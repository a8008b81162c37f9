// PTLTensor
