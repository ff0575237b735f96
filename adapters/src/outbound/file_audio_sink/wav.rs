//! The 44-byte WAV header of raw samples: written with zero sizes when a recording opens,
//! rewritten with the real sizes at each commit and at the end, and repaired from the file's
//! length after a crash.

use aimcs_domain::SampleEncoding;

/// Length of the header; the samples follow it.
pub(super) const HEADER_LEN: u64 = 44;

/// The header for `data_len` bytes of samples. Sizes beyond what the format can hold are
/// clamped (WAV stops at 4 GiB; at 16 kHz mono that is over 37 hours).
pub(super) fn header(
    encoding: SampleEncoding,
    sample_rate: u32,
    channels: u16,
    data_len: u64,
) -> [u8; 44] {
    let (format_tag, bits): (u16, u16) = match encoding {
        SampleEncoding::PcmS16le => (1, 16),
        SampleEncoding::Alaw => (6, 8),
        SampleEncoding::Mulaw => (7, 8),
    };
    let block_align = channels * (bits / 8);
    let byte_rate = sample_rate * u32::from(block_align);
    let data_len = u32::try_from(data_len)
        .unwrap_or(u32::MAX - 37)
        .min(u32::MAX - 37);

    let mut header = [0_u8; 44];
    header[0..4].copy_from_slice(b"RIFF");
    // The RIFF size counts the pad byte an odd data length is followed by.
    let pad = data_len % 2;
    header[4..8].copy_from_slice(&(36 + data_len + pad).to_le_bytes());
    header[8..12].copy_from_slice(b"WAVE");
    header[12..16].copy_from_slice(b"fmt ");
    header[16..20].copy_from_slice(&16_u32.to_le_bytes());
    header[20..22].copy_from_slice(&format_tag.to_le_bytes());
    header[22..24].copy_from_slice(&channels.to_le_bytes());
    header[24..28].copy_from_slice(&sample_rate.to_le_bytes());
    header[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    header[32..34].copy_from_slice(&block_align.to_le_bytes());
    header[34..36].copy_from_slice(&bits.to_le_bytes());
    header[36..40].copy_from_slice(b"data");
    header[40..44].copy_from_slice(&data_len.to_le_bytes());
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pcm_header_describes_16_bit_samples_and_their_length() {
        let header = header(SampleEncoding::PcmS16le, 16_000, 1, 32_000);
        assert_eq!(&header[0..4], b"RIFF");
        assert_eq!(
            u32::from_le_bytes(header[4..8].try_into().unwrap()),
            36 + 32_000
        );
        assert_eq!(
            u16::from_le_bytes(header[20..22].try_into().unwrap()),
            1,
            "PCM"
        );
        assert_eq!(
            u32::from_le_bytes(header[28..32].try_into().unwrap()),
            32_000,
            "bytes per second"
        );
        assert_eq!(
            u16::from_le_bytes(header[34..36].try_into().unwrap()),
            16,
            "bits per sample"
        );
        assert_eq!(
            u32::from_le_bytes(header[40..44].try_into().unwrap()),
            32_000
        );
    }

    #[test]
    fn g711_headers_carry_their_format_tags() {
        assert_eq!(
            u16::from_le_bytes(
                header(SampleEncoding::Mulaw, 8_000, 1, 0)[20..22]
                    .try_into()
                    .unwrap()
            ),
            7
        );
        assert_eq!(
            u16::from_le_bytes(
                header(SampleEncoding::Alaw, 8_000, 2, 0)[20..22]
                    .try_into()
                    .unwrap()
            ),
            6
        );
    }

    #[test]
    fn a_length_beyond_four_gigabytes_is_clamped() {
        let header = header(SampleEncoding::PcmS16le, 16_000, 1, 5 << 30);
        assert_eq!(
            u32::from_le_bytes(header[4..8].try_into().unwrap()),
            u32::MAX - 1
        );
    }

    #[test]
    fn an_odd_length_counts_its_pad_byte_in_the_riff_size_only() {
        let header = header(SampleEncoding::Mulaw, 8_000, 1, 41);
        assert_eq!(
            u32::from_le_bytes(header[4..8].try_into().unwrap()),
            36 + 42
        );
        assert_eq!(u32::from_le_bytes(header[40..44].try_into().unwrap()), 41);
    }
}
