/**
 * onnxruntime-node's environment, set before it loads (ort.ts imports this first). onnxruntime 1.30 on Linux and
 * macOS queues usage events in ~/.cache/Microsoft/DeveloperTools/.onnxruntime/ and uploads them to Microsoft's
 * collector; an on-device runtime does not report to anyone unless its user asks: its telemetry is off unless
 * ORT_DISABLE_TELEMETRY is set already (ORT_DISABLE_TELEMETRY=0 turns it back on). Set here, on the main thread,
 * it reaches the native library for the worker threads too.
 */
process.env.ORT_DISABLE_TELEMETRY ??= '1';
