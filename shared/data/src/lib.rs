//! fedprofile-data
