//! fedprofile-privacy
