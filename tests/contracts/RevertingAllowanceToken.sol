// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Erc20Core} from "./Erc20Core.sol";

/// @notice An ERC-20 whose allowance() always reverts, while approve() still emits Approval and
/// everything else works: a discovered approval that cannot be read.
contract RevertingAllowanceToken is Erc20Core {
    string public name;
    string public symbol;

    constructor(string memory name_, string memory symbol_, uint8 decimals_) Erc20Core(decimals_) {
        name = name_;
        symbol = symbol_;
    }

    function allowance(address, address) public pure override returns (uint256) {
        revert("allowance is not readable");
    }
}
