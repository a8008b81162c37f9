print("ptl")
