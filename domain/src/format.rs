//! Audio formats a client can declare, and the rules that make a declaration valid. Clients
//! of the original protocol declare nothing; their audio is [`AudioFormat::Undeclared`] and
//! whoever stores it works out the container from the bytes.

use std::time::Duration;

/// How raw samples are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleEncoding {
    /// Signed 16-bit little-endian PCM.
    PcmS16le,
    /// G.711 µ-law, one byte per sample (telephony).
    Mulaw,
    /// G.711 A-law, one byte per sample (telephony).
    Alaw,
}

impl SampleEncoding {
    /// Every encoding, for lookups by name.
    const ALL: [Self; 3] = [Self::PcmS16le, Self::Mulaw, Self::Alaw];

    /// The encoding's name, as clients declare it and records store it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::PcmS16le => "pcm_s16le",
            Self::Mulaw => "mulaw",
            Self::Alaw => "alaw",
        }
    }

    /// The encoding [`SampleEncoding::name`] names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|encoding| encoding.name() == name)
    }

    /// Bytes per sample of one channel.
    pub const fn bytes_per_sample(self) -> u32 {
        match self {
            Self::PcmS16le => 2,
            Self::Mulaw | Self::Alaw => 1,
        }
    }
}

/// A container of compressed audio, streamed as the client produces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Container {
    /// WebM (Matroska), as browsers' `MediaRecorder` writes Opus.
    Webm,
    /// Ogg, as Firefox's `MediaRecorder` and many encoders write Opus.
    Ogg,
}

impl Container {
    /// The container's name, as clients declare it and records store it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Webm => "webm",
            Self::Ogg => "ogg",
        }
    }

    /// The container [`Container::name`] names.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Webm, Self::Ogg]
            .into_iter()
            .find(|container| container.name() == name)
    }
}

/// The encoding a client asks for, before the rules have been applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Raw samples.
    Samples(SampleEncoding),
    /// Opus, which must come in a container.
    Opus,
}

/// A format declaration as the client made it; [`AudioFormat::negotiate`] checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatRequest {
    /// The encoding.
    pub encoding: Encoding,
    /// The container, required for Opus and refused for raw samples.
    pub container: Option<Container>,
    /// Samples per second; required for PCM.
    pub sample_rate: Option<u32>,
    /// Channels; one when left out.
    pub channels: Option<u16>,
}

/// Why a format declaration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// PCM says nothing about its rate, so it must be declared.
    #[error("sampleRate is required for pcm_s16le")]
    MissingSampleRate,
    /// A rate outside what any microphone or telephone line produces.
    #[error("sampleRate {0} is out of range: use 8000 to 192000")]
    SampleRateOutOfRange(u32),
    /// Opus runs at one of five rates.
    #[error("sampleRate {0} is not an Opus rate: use 8000, 12000, 16000, 24000 or 48000")]
    NotAnOpusRate(u32),
    /// More channels than a recording of a voice needs.
    #[error("channels {0} is out of range: use 1 or 2")]
    ChannelsOutOfRange(u16),
    /// Opus without a container cannot be stored or played.
    #[error("opus needs a container: \"webm\" or \"ogg\"")]
    ContainerRequired,
    /// Raw samples in a container contradict each other.
    #[error("raw samples take no container; leave container out or declare opus")]
    ContainerNotAllowed,
}

/// The effective format of a session's audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    /// Raw samples, no container: their duration follows from their size.
    Samples {
        /// The sample encoding.
        encoding: SampleEncoding,
        /// Samples per second.
        sample_rate: u32,
        /// Interleaved channels.
        channels: u16,
    },
    /// Opus in a container, stored as the client streams it.
    Opus {
        /// The container.
        container: Container,
        /// The rate the client encodes at (Opus decodes at 48 kHz whatever it is).
        sample_rate: u32,
        /// Channels.
        channels: u16,
    },
    /// Not declared (a client of the original protocol): the bytes say what they are.
    Undeclared,
}

const RATES: std::ops::RangeInclusive<u32> = 8_000..=192_000;
const OPUS_RATES: [u32; 5] = [8_000, 12_000, 16_000, 24_000, 48_000];
const G711_RATE: u32 = 8_000;
const OPUS_RATE: u32 = 48_000;

impl AudioFormat {
    /// Applies the rules to a declaration: what is required, what contradicts, what a left-out
    /// field defaults to.
    ///
    /// # Errors
    /// The first [`FormatError`] the declaration breaks.
    pub fn negotiate(request: FormatRequest) -> Result<Self, FormatError> {
        let channels = request.channels.unwrap_or(1);
        if !(1..=2).contains(&channels) {
            return Err(FormatError::ChannelsOutOfRange(channels));
        }
        match request.encoding {
            Encoding::Samples(encoding) => {
                if request.container.is_some() {
                    return Err(FormatError::ContainerNotAllowed);
                }
                let sample_rate = match (encoding, request.sample_rate) {
                    (_, Some(rate)) => rate,
                    (SampleEncoding::PcmS16le, None) => return Err(FormatError::MissingSampleRate),
                    // G.711 is 8 kHz unless said otherwise.
                    (SampleEncoding::Mulaw | SampleEncoding::Alaw, None) => G711_RATE,
                };
                if !RATES.contains(&sample_rate) {
                    return Err(FormatError::SampleRateOutOfRange(sample_rate));
                }
                Ok(Self::Samples {
                    encoding,
                    sample_rate,
                    channels,
                })
            }
            Encoding::Opus => {
                let container = request.container.ok_or(FormatError::ContainerRequired)?;
                let sample_rate = request.sample_rate.unwrap_or(OPUS_RATE);
                if !OPUS_RATES.contains(&sample_rate) {
                    return Err(FormatError::NotAnOpusRate(sample_rate));
                }
                Ok(Self::Opus {
                    container,
                    sample_rate,
                    channels,
                })
            }
        }
    }

    /// Bytes of audio per second, where the format fixes it.
    pub fn bytes_per_second(&self) -> Option<u64> {
        match *self {
            Self::Samples {
                encoding,
                sample_rate,
                channels,
            } => Some(
                u64::from(sample_rate)
                    * u64::from(channels)
                    * u64::from(encoding.bytes_per_sample()),
            ),
            Self::Opus { .. } | Self::Undeclared => None,
        }
    }

    /// How much audio `bytes` bytes hold, where the format says.
    pub fn duration_of(&self, bytes: u64) -> Option<Duration> {
        let per_second = self.bytes_per_second()?;
        Some(Duration::from_micros(
            bytes.saturating_mul(1_000_000) / per_second,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_as_what_they_name() {
        for encoding in SampleEncoding::ALL {
            assert_eq!(SampleEncoding::from_name(encoding.name()), Some(encoding));
        }
        for container in [Container::Webm, Container::Ogg] {
            assert_eq!(Container::from_name(container.name()), Some(container));
        }
        assert_eq!(SampleEncoding::from_name("opus"), None);
        assert_eq!(Container::from_name("WEBM"), None);
    }

    fn request(encoding: Encoding) -> FormatRequest {
        FormatRequest {
            encoding,
            container: None,
            sample_rate: None,
            channels: None,
        }
    }

    const PCM: Encoding = Encoding::Samples(SampleEncoding::PcmS16le);

    #[test]
    fn pcm_needs_a_rate_and_defaults_to_mono() {
        assert_eq!(
            AudioFormat::negotiate(request(PCM)),
            Err(FormatError::MissingSampleRate)
        );
        let format = AudioFormat::negotiate(FormatRequest {
            sample_rate: Some(16_000),
            ..request(PCM)
        });
        assert_eq!(
            format,
            Ok(AudioFormat::Samples {
                encoding: SampleEncoding::PcmS16le,
                sample_rate: 16_000,
                channels: 1
            })
        );
    }

    #[test]
    fn g711_defaults_to_8_khz() {
        let format =
            AudioFormat::negotiate(request(Encoding::Samples(SampleEncoding::Mulaw))).unwrap();
        assert_eq!(format.bytes_per_second(), Some(8_000));
    }

    #[test]
    fn opus_needs_a_container_and_an_opus_rate() {
        assert_eq!(
            AudioFormat::negotiate(request(Encoding::Opus)),
            Err(FormatError::ContainerRequired)
        );
        let webm = FormatRequest {
            container: Some(Container::Webm),
            ..request(Encoding::Opus)
        };
        assert_eq!(
            AudioFormat::negotiate(webm),
            Ok(AudioFormat::Opus {
                container: Container::Webm,
                sample_rate: 48_000,
                channels: 1
            })
        );
        let odd_rate = FormatRequest {
            sample_rate: Some(44_100),
            ..webm
        };
        assert_eq!(
            AudioFormat::negotiate(odd_rate),
            Err(FormatError::NotAnOpusRate(44_100))
        );
    }

    #[test]
    fn contradictions_and_out_of_range_values_are_refused() {
        let pcm = FormatRequest {
            sample_rate: Some(16_000),
            ..request(PCM)
        };
        assert_eq!(
            AudioFormat::negotiate(FormatRequest {
                container: Some(Container::Ogg),
                ..pcm
            }),
            Err(FormatError::ContainerNotAllowed)
        );
        assert_eq!(
            AudioFormat::negotiate(FormatRequest {
                sample_rate: Some(4_000),
                ..pcm
            }),
            Err(FormatError::SampleRateOutOfRange(4_000))
        );
        assert_eq!(
            AudioFormat::negotiate(FormatRequest {
                channels: Some(6),
                ..pcm
            }),
            Err(FormatError::ChannelsOutOfRange(6))
        );
        assert_eq!(
            AudioFormat::negotiate(FormatRequest {
                channels: Some(0),
                ..pcm
            }),
            Err(FormatError::ChannelsOutOfRange(0))
        );
    }

    #[test]
    fn the_duration_of_raw_samples_follows_from_their_size() {
        let format = AudioFormat::Samples {
            encoding: SampleEncoding::PcmS16le,
            sample_rate: 16_000,
            channels: 1,
        };
        assert_eq!(format.duration_of(3_200), Some(Duration::from_millis(100)));
        assert_eq!(AudioFormat::Undeclared.duration_of(3_200), None);
    }
}
