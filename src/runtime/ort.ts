/** onnxruntime-node, loaded after its environment is set (ort-env.ts: telemetry off unless asked for). */
import './ort-env.ts';
import ort from 'onnxruntime-node';

export default ort;
