print("ptl: building")
