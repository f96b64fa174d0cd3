// Package identity defines security identities, the numbers policy is
// written against.
package identity

// NumericIdentity is the number of a security identity.
type NumericIdentity uint32

// ReservedInit is the identity of an endpoint whose labels are not yet
// resolved.
const ReservedInit NumericIdentity = 5

// MinimalAllocationIdentity is the first identity the allocator hands out.
const MinimalAllocationIdentity NumericIdentity = 256
