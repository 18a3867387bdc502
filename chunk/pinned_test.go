package chunk

// pinnedCDCSizes are the chunk sizes TestCDCBoundariesPinned expects for
// its seeded 1 MiB input.
var pinnedCDCSizes = []int{106677, 67959, 29488, 56403, 93207, 192169, 82693, 364522, 55458}
