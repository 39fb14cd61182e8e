// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice NOT a token: it emits ERC-20 Approval events naming whoever it likes, as phishing
/// contracts do to plant approvals in a wallet's history. It has no ERC-20 function at all, so
/// allowance(), balanceOf(), totalSupply() and the rest revert (no fallback function).
contract FakeApprovalEmitter {
    event Approval(address indexed owner, address indexed spender, uint256 value);

    function emitApproval(address owner, address spender, uint256 value) external {
        emit Approval(owner, spender, value);
    }
}
