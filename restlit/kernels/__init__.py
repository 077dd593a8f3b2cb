"""CPU kernels: chunked LM-head log-probs, packed-group forward, block-sparse and cascade attention, the KV cache, oneDNN-packed linears, the written-out decoding step, memory."""
