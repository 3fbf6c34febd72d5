package outbox

// MinAtomicBatch is minAtomicBatch, for the tests.
const MinAtomicBatch = minAtomicBatch
