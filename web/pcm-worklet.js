// AudioWorklet: turns the microphone, at whatever rate the AudioContext runs (44.1 or 48 kHz
// mostly), into 16 kHz mono signed 16-bit little-endian PCM, posted in ~20 ms chunks.
//
// Resampling is band-limited: each output sample is a windowed-sinc interpolation of the
// input around its exact (fractional) position, with the cutoff below the output's Nyquist
// frequency, so that nothing above 8 kHz folds back into the speech band. The filter is
// normalised per sample, so a constant input comes out unchanged whatever the ratio.
//
// Messages to the main thread: {pcm: ArrayBuffer, peak: 0..1} per chunk, and {flushed: true}
// once a "flush" request has posted the last partial chunk. After that the processor stops.

const ZERO_CROSSINGS = 8; // per side: ~50 taps at 44.1 kHz, plenty for speech
const HEADROOM = 0.9; // cutoff as a fraction of the output's Nyquist frequency

class PcmDownsampler extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate = 16000, chunkMs = 20 } = options.processorOptions || {};
    // `sampleRate` is the AudioContext's rate, a global of the worklet scope.
    this.step = sampleRate / targetRate; // input samples per output sample
    this.cutoff = 0.5 * Math.min(1, 1 / this.step) * HEADROOM; // cycles per input sample
    this.halfWidth = ZERO_CROSSINGS / (2 * this.cutoff); // in input samples
    this.chunkSamples = Math.round((targetRate * chunkMs) / 1000);
    this.kernels = this.precompute(sampleRate, targetRate);

    // Input not yet consumed: `buffer[0]` is input sample number `bufferStart`. It starts
    // with a half filter width of silence, so the first output sample has its history.
    const pad = Math.ceil(this.halfWidth);
    this.buffer = new Float32Array(8192);
    this.length = pad;
    this.bufferStart = -pad;
    this.produced = 0; // output samples so far; the next sits at input position produced * step

    this.chunk = new DataView(new ArrayBuffer(this.chunkSamples * 2));
    this.filled = 0;
    this.peak = 0;
    this.done = false;

    this.port.onmessage = (event) => {
      if (event.data === 'flush') {
        this.postChunk();
        this.port.postMessage({ flushed: true });
        this.done = true;
      }
    };
  }

  process(inputs) {
    if (this.done) return false;
    const channels = inputs[0];
    if (channels && channels.length > 0) {
      this.append(channels);
      this.resample();
    }
    return true;
  }

  // Mixes the channels of one render quantum down to mono and appends it.
  append(channels) {
    const frames = channels[0].length;
    if (this.length + frames > this.buffer.length) {
      const grown = new Float32Array(Math.max(this.buffer.length * 2, this.length + frames));
      grown.set(this.buffer.subarray(0, this.length));
      this.buffer = grown;
    }
    const scale = 1 / channels.length;
    for (let i = 0; i < frames; i += 1) {
      let sum = 0;
      for (let c = 0; c < channels.length; c += 1) sum += channels[c][i];
      this.buffer[this.length + i] = sum * scale;
    }
    this.length += frames;
  }

  // Emits every output sample whose filter window lies inside the buffered input.
  resample() {
    const end = this.bufferStart + this.length; // first input index not yet buffered
    for (;;) {
      const { first, weights } = this.kernel(this.produced);
      if (first + weights.length - 1 >= end) break;
      let sum = 0;
      const offset = first - this.bufferStart;
      for (let i = 0; i < weights.length; i += 1) sum += this.buffer[offset + i] * weights[i];
      this.push(sum);
      this.produced += 1;
    }
    // Drop input no future output sample can reach.
    const keepFrom = this.kernel(this.produced).first - this.bufferStart;
    if (keepFrom > 0) {
      this.buffer.copyWithin(0, keepFrom, this.length);
      this.length -= keepFrom;
      this.bufferStart += keepFrom;
    }
  }

  // The filter for output sample `n`: the first input sample it reads, and its weights.
  kernel(n) {
    if (this.kernels) {
      const { period, inputPerPeriod, phases } = this.kernels;
      const phase = n % period;
      const { offset, weights } = phases[phase];
      return { first: ((n - phase) / period) * inputPerPeriod + offset, weights };
    }
    return this.weigh(n * this.step);
  }

  // The rates' ratio is rational, so output positions repeat their fractional part every
  // `period` samples: precompute one kernel per phase (160 of them for 44.1 → 16 kHz) rather
  // than evaluate the window and sinc 50 times per sample. Null when there would be too many.
  precompute(inputRate, outputRate) {
    const gcd = (a, b) => (b === 0 ? a : gcd(b, a % b));
    const divisor = gcd(Math.round(inputRate), outputRate);
    const period = outputRate / divisor;
    if (!Number.isInteger(period) || period > 4000) return null;
    const phases = [];
    for (let phase = 0; phase < period; phase += 1) {
      const { first, weights } = this.weigh(phase * this.step);
      phases.push({ offset: first, weights });
    }
    return { period, inputPerPeriod: Math.round(inputRate) / divisor, phases };
  }

  // The normalised kernel around input position `centre`.
  weigh(centre) {
    const first = Math.ceil(centre - this.halfWidth);
    const last = Math.floor(centre + this.halfWidth);
    const weights = new Float32Array(last - first + 1);
    let total = 0;
    for (let i = first; i <= last; i += 1) {
      const w = this.tap(i - centre);
      weights[i - first] = w;
      total += w;
    }
    for (let i = 0; i < weights.length; i += 1) weights[i] /= total;
    return { first, weights };
  }

  // The low-pass filter at `x` input samples from the centre: sinc under a Blackman window.
  tap(x) {
    const t = 2 * this.cutoff * x;
    const sinc = t === 0 ? 1 : Math.sin(Math.PI * t) / (Math.PI * t);
    const phase = (Math.PI * (x + this.halfWidth)) / this.halfWidth; // 0 .. 2π over the window
    const window = 0.42 - 0.5 * Math.cos(phase) + 0.08 * Math.cos(2 * phase);
    return sinc * window;
  }

  push(value) {
    const clamped = Math.max(-1, Math.min(1, value));
    const magnitude = Math.abs(clamped);
    if (magnitude > this.peak) this.peak = magnitude;
    const sample = clamped < 0 ? Math.round(clamped * 32768) : Math.round(clamped * 32767);
    this.chunk.setInt16(this.filled * 2, sample, true); // little-endian, whatever the CPU
    this.filled += 1;
    if (this.filled === this.chunkSamples) this.postChunk();
  }

  postChunk() {
    if (this.filled === 0) return;
    const pcm = this.chunk.buffer.slice(0, this.filled * 2);
    this.port.postMessage({ pcm, peak: this.peak }, [pcm]);
    this.filled = 0;
    this.peak = 0;
  }
}

registerProcessor('pcm-downsampler', PcmDownsampler);
